"""``import vlp`` and its light entry points import none of the heavy optional libraries.

Each check runs in a fresh interpreter, so that nothing imported by the test session (or
by an earlier test) hides an import. Importing a package must stay cheap; the heavy
libraries load with the one module that uses them, when its names are first used.
"""

from __future__ import annotations

import functools
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

HEAVY = ("timm", "open_clip", "torchvision", "triton", "webdataset", "huggingface_hub", "PIL")

#: Entry points that must stay light, checked one after another in one interpreter: what
#: is loaded after all of them is an upper bound of what each loads.
LIGHT = [
    "import vlp",
    "from vlp.losses import clip_loss",
    "import vlp.losses",
    "import vlp.masking",
    "import vlp.heads",
    "import vlp.kernels",
    "import vlp.distributed",
    "import vlp.negatives",
    "import vlp.eval",
    "import vlp.adapters",
    "import vlp.augment",
    "from vlp.augment import text_crop",
    "import vlp.data",
    "import vlp.data.shapes",
    "import vlp.models",
    "import vlp.optim",
    "import vlp.testing",
]


@functools.cache
def _report() -> dict[str, list[str]]:
    """One fresh interpreter: the light entry points, then the lazy names."""
    code = f"""
    import json, sys
    heavy = {HEAVY!r}
    seen = {{}}
    for stmt in {LIGHT!r}:
        exec(stmt)
        seen[stmt] = [m for m in heavy if m in sys.modules]
    import vlp
    import vlp.augment, vlp.data, vlp.models
    seen["dir_data"] = sorted(set(vlp.data.__all__) - set(dir(vlp.data)))
    seen["dir_augment"] = sorted(set(vlp.augment.__all__) - set(dir(vlp.augment)))
    seen["dir_models"] = sorted(set(vlp.models.__all__) - set(dir(vlp.models)))
    # The lazy names resolve, and only then load their library.
    from vlp.augment import CLIP_MEAN, MultiCropTransform
    from vlp.data import write_shards
    seen["after_names"] = [m for m in ("torchvision", "webdataset") if m in sys.modules]
    seen["modules"] = [MultiCropTransform.__module__, write_shards.__module__]
    seen["cached"] = [str("MultiCropTransform" in vars(vlp.augment)),
                      str("write_shards" in vars(vlp.data))]
    print(json.dumps(seen))
    """
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("TRITON_INTERPRET", None)
    out = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        check=True,
        env=env,
        cwd=ROOT,
    )
    result: dict[str, list[str]] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def test_light_entry_points_import_no_heavy_library() -> None:
    seen = _report()
    for stmt in LIGHT:
        assert seen[stmt] == [], f"{stmt!r} imports {seen[stmt]}"
    assert seen["after_names"]  # the check can see a heavy import


def test_lazy_names_resolve_and_list() -> None:
    seen = _report()
    assert seen["dir_data"] == seen["dir_augment"] == seen["dir_models"] == []
    assert seen["after_names"] == ["torchvision", "webdataset"]
    assert seen["modules"] == ["vlp.augment.multicrop", "vlp.data.wds"]
    assert seen["cached"] == ["True", "True"]
