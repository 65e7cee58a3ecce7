"""``import vlp`` and its light entry points import none of the heavy optional libraries.

Each check runs in a fresh interpreter, so that nothing imported by the test session (or
by an earlier test) hides an import. Importing a package must stay cheap; the heavy
libraries load with the one module that uses them, when its names are first used.
"""

from __future__ import annotations

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
]


def _run(code: str) -> dict[str, list[str]]:
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
    code = f"""
    import json, sys
    heavy = {HEAVY!r}
    seen = {{}}
    for stmt in {LIGHT!r}:
        exec(stmt)
        seen[stmt] = [m for m in heavy if m in sys.modules]
    # The lazy names resolve, and only then load their library.
    import vlp
    seen["vlp.models.build_ssmke"] = [vlp.models.build_ssmke.__module__]
    seen["after models"] = [m for m in heavy if m in sys.modules]
    print(json.dumps(seen))
    """
    seen = _run(code)
    for stmt in LIGHT:
        assert seen[stmt] == [], f"{stmt!r} imports {seen[stmt]}"
    assert seen["vlp.models.build_ssmke"] == ["vlp.models.ssmke"]
    assert "timm" in seen["after models"]  # the check can see a heavy import


def test_lazy_names_resolve_and_list() -> None:
    code = """
    import json, sys
    import vlp.augment, vlp.data, vlp.models
    out = {
        "dir_data": sorted(set(vlp.data.__all__) - set(dir(vlp.data))),
        "dir_augment": sorted(set(vlp.augment.__all__) - set(dir(vlp.augment))),
        "dir_models": sorted(set(vlp.models.__all__) - set(dir(vlp.models))),
        "before": [m for m in ("torchvision", "webdataset") if m in sys.modules],
    }
    from vlp.augment import CLIP_MEAN, MultiCropTransform
    from vlp.data import write_shards
    out["after"] = [m for m in ("torchvision", "webdataset") if m in sys.modules]
    out["modules"] = [MultiCropTransform.__module__, write_shards.__module__]
    out["cached"] = ["MultiCropTransform" in vars(vlp.augment), "write_shards" in vars(vlp.data)]
    print(json.dumps(out))
    """
    out = _run(code)
    assert out["dir_data"] == out["dir_augment"] == out["dir_models"] == []
    assert out["before"] == []
    assert out["after"] == ["torchvision", "webdataset"]
    assert out["modules"] == ["vlp.augment.multicrop", "vlp.data.wds"]
    assert out["cached"] == [True, True]
