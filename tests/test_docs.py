"""Every ``python`` code block of README.md and docs/*.md runs, and what it prints is checked.

One test per page: the page's blocks run in order, in one fresh namespace, on the CPU (in a
temporary working directory, with ``TRITON_INTERPRET=1`` from ``conftest.py``, so a block that
takes the Triton path runs under the interpreter). The page fails on any exception, on printed
output that differs from the page, and on a ``DeprecationWarning`` raised by vlp (docs must use
the current names).

Markers for writers of docs (HTML comments: the rendered page does not show them):

- A ```` ```text ```` block right after a ```` ```python ```` block (only blank lines between)
  is that block's expected standard output, compared as a doctest is: ``...`` matches anything
  (``ELLIPSIS``) and runs of whitespace compare equal (``NORMALIZE_WHITESPACE``).
- ``<!-- docs-test: skip reason="needs a GPU" -->`` right before a python block skips it; the
  skip and its reason are reported as a skipped test item of their own. Use it only for blocks
  that need a GPU, a download or files the reader has and the test does not.
- A hidden setup block runs at its place in the page and defines what a snippet takes from
  the reader ("your model", "your loader")::

      <!-- docs-test: setup
      images = torch.randn(4, 3, 64, 64)   # stands for the reader's batch
      -->

  Keep setup small and honest: it may stand in for the reader's data, model or download,
  never patch vlp or hide an error.
"""

from __future__ import annotations

import contextlib
import doctest
import io
import os
import random
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
VLP_DIR = str(ROOT / "vlp")
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]

_MARKER = re.compile(r"^<!--\s*docs-test:\s*(?P<kind>[\w-]+)(?P<rest>.*)$")
_REASON = re.compile(r'^\s*reason="(?P<reason>[^"]+)"\s*-->\s*$')
_FENCE = re.compile(r"^(?P<indent>\s*)```(?P<lang>[\w+-]*)\s*$")


@dataclass
class Block:
    """One runnable piece of a page."""

    kind: str  # "python" or "setup"
    code: str
    line: int  # 1-based line of the first code line in the page
    skip: str | None = None  # the reason, for a skipped block
    expected: str | None = None  # stdout the page shows after it


def parse_page(text: str, name: str = "<page>") -> list[Block]:
    """The python and setup blocks of a markdown page, in order, with markers applied."""
    lines = text.splitlines()
    blocks: list[Block] = []
    pending_skip: str | None = None
    last_python: Block | None = None  # a python block that a text block may follow
    i = 0
    while i < len(lines):
        line = lines[i]
        marker = _MARKER.match(line.strip())
        fence = _FENCE.match(line)
        if marker:
            kind, rest = marker["kind"], marker["rest"]
            if kind == "skip":
                reason = _REASON.match(rest)
                if reason is None:
                    raise ValueError(f'{name}:{i + 1}: write `docs-test: skip reason="..." -->`')
                pending_skip = reason["reason"]
                i += 1
            elif kind == "setup":
                if rest.strip():
                    raise ValueError(f"{name}:{i + 1}: setup code starts on the next line")
                end = i + 1
                while end < len(lines) and lines[end].strip() != "-->":
                    end += 1
                if end == len(lines):
                    raise ValueError(f"{name}:{i + 1}: setup block without a closing `-->`")
                blocks.append(Block("setup", "\n".join(lines[i + 1 : end]), i + 2))
                last_python = None
                i = end + 1
            else:
                raise ValueError(f"{name}:{i + 1}: unknown docs-test marker {kind!r}")
            continue
        if fence:
            end = i + 1
            while end < len(lines) and not lines[end].strip().startswith("```"):
                end += 1
            if end == len(lines):
                raise ValueError(f"{name}:{i + 1}: unclosed code fence")
            lang, indent = fence["lang"], len(fence["indent"])
            body = "\n".join(x[indent:] for x in lines[i + 1 : end])
            if lang in ("py", "python3", "pycon"):
                raise ValueError(f"{name}:{i + 1}: write ```python (got ```{lang})")
            if lang == "python":
                if indent:
                    raise ValueError(f"{name}:{i + 1}: indented python blocks are not run")
                last_python = Block("python", body, i + 2, skip=pending_skip)
                blocks.append(last_python)
                pending_skip = None
            elif lang == "text" and last_python is not None:
                last_python.expected = body + "\n"
                last_python = None
            else:
                last_python = None
            if pending_skip is not None:
                raise ValueError(f"{name}:{i + 1}: a skip marker must precede a python block")
            i = end + 1
            continue
        if line.strip():
            if pending_skip is not None:
                raise ValueError(f"{name}:{i + 1}: a skip marker must precede a python block")
            last_python = None
        i += 1
    if pending_skip is not None:
        raise ValueError(f"{name}: a skip marker at the end of the page")
    return blocks


_CHECKER = doctest.OutputChecker()
_FLAGS = doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE


def _vlp_deprecation(w: warnings.WarningMessage) -> bool:
    if not issubclass(w.category, DeprecationWarning):
        return False
    return "vlp" in str(w.message) or str(w.filename).startswith(VLP_DIR)


def run_page(text: str, name: str, workdir: Path) -> list[Block]:
    """Run a page's blocks in one namespace; raise AssertionError on the first failure.

    Returns the skipped blocks.
    """
    namespace: dict[str, object] = {"__name__": "__docs__"}
    skipped = []
    torch.manual_seed(0)
    random.seed(0)
    cwd = os.getcwd()
    os.chdir(workdir)
    try:
        for block in parse_page(text, name):
            if block.skip is not None:
                skipped.append(block)
                continue
            # Pad so that tracebacks give the page's own line numbers.
            code = compile("\n" * (block.line - 1) + block.code, name, "exec")
            out = io.StringIO()
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always")
                with contextlib.redirect_stdout(out):
                    exec(code, namespace)
            deprecated = [w for w in caught if _vlp_deprecation(w)]
            if deprecated:
                w = deprecated[0]
                raise AssertionError(
                    f"{name}:{block.line}: the block uses a deprecated vlp name: {w.message}"
                )
            got = out.getvalue()
            if block.expected is not None and not _CHECKER.check_output(
                block.expected, got, _FLAGS
            ):
                example = doctest.Example(block.code, block.expected)
                diff = _CHECKER.output_difference(example, got, _FLAGS)
                raise AssertionError(f"{name}:{block.line}: printed output differs\n{diff}")
    finally:
        os.chdir(cwd)
    return skipped


def _rel(page: Path) -> str:
    return str(page.relative_to(ROOT))


def _skipped_blocks() -> list[tuple[str, Block]]:
    return [(_rel(p), b) for p in PAGES for b in parse_page(p.read_text(), _rel(p)) if b.skip]


_RUNNABLE = [p for p in PAGES if any(b.skip is None for b in parse_page(p.read_text(), _rel(p)))]


@pytest.mark.parametrize("page", _RUNNABLE, ids=_rel)
def test_page_runs(page: Path, tmp_path: Path) -> None:
    run_page(page.read_text(), _rel(page), tmp_path)


_SKIPPED = _skipped_blocks()


@pytest.mark.parametrize("where", [f"{name}:{b.line}" for name, b in _SKIPPED] or ["none"])
def test_skipped_block(where: str) -> None:
    """Each skipped block shows up as a skipped test with the reason the page gives."""
    reasons = {f"{name}:{b.line}": b.skip for name, b in _SKIPPED}
    if where == "none":
        assert not reasons
        return
    pytest.skip(f"{where}: {reasons[where]}")


# ----------------------------------------------------------------------------------------
# the harness itself


PAGE = """\
Some prose.

```python
x = 2 + 2
print(x, "apples")
```

```text
4   apples
```

<!-- docs-test: setup
y = x * 10
-->

<!-- docs-test: skip reason="needs a GPU" -->
```python
torch.cuda.synchronize()
```

```python
print(list(range(y)))
```

```text
[0, 1, ..., 39]
```
"""


def test_harness_runs_checks_and_skips(tmp_path: Path) -> None:
    blocks = parse_page(PAGE)
    assert [(b.kind, b.line, b.skip) for b in blocks] == [
        ("python", 4, None),
        ("setup", 13, None),
        ("python", 18, "needs a GPU"),
        ("python", 22, None),
    ]
    assert blocks[0].expected == "4   apples\n" and blocks[2].expected is None
    skipped = run_page(PAGE, "page.md", tmp_path)
    assert [b.line for b in skipped] == [18]


@pytest.mark.parametrize(
    ("page", "message"),
    [
        (PAGE.replace("4   apples", "5 apples"), "page.md:4: printed output differs"),
        (PAGE.replace("y = x * 10", "y = z"), "name 'z' is not defined"),
        (PAGE.replace("[0, 1, ..., 39]", "[0, 1, ..., 38]"), "page.md:22: printed output"),
        (
            PAGE.replace(
                "y = x * 10",
                "import warnings\nwarnings.warn('vlp.old is deprecated', DeprecationWarning)",
            ),
            "deprecated vlp name",
        ),
    ],
)
def test_harness_fails(page: str, message: str, tmp_path: Path) -> None:
    with pytest.raises(Exception, match=re.escape(message)):
        run_page(page, "page.md", tmp_path)


@pytest.mark.parametrize(
    "bad",
    [
        "<!-- docs-test: skip -->\n```python\npass\n```\n",
        '<!-- docs-test: skip reason="x" -->\ntext\n```python\npass\n```\n',
        "<!-- docs-test: setup\npass\n",
        "<!-- docs-test: frobnicate -->\n",
        "```py\npass\n```\n",
        "- item\n\n  ```python\n  pass\n  ```\n",
    ],
)
def test_harness_rejects_malformed_markers(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_page(bad)
