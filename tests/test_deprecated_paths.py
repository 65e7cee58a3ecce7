"""Old import paths of moved and renamed names: they still work, warn, and name the new path."""

from __future__ import annotations

import importlib
import random
import subprocess
import sys
import warnings

import pytest
import torch

import vlp.data
import vlp.data.shapes
from vlp._deprecated import REMOVAL, deprecated_getattr, moved
from vlp.data.shapes import captions as shapes_captions
from vlp.data.shapes import scene as shapes_scene

# (old module, old name, new module, new name, the path the warning must name)
MOVED = [
    ("vlp.heads", "LogitScale", "vlp.losses", "LogitScale", "vlp.losses.LogitScale"),
    (
        "vlp.heads",
        "TeacherMemoryBank",
        "vlp.losses",
        "TeacherMemoryBank",
        "vlp.losses.TeacherMemoryBank",
    ),
    ("vlp.heads.logit_scale", "LogitScale", "vlp.losses", "LogitScale", "vlp.losses.LogitScale"),
    (
        "vlp.heads.memory_bank",
        "TeacherMemoryBank",
        "vlp.losses",
        "TeacherMemoryBank",
        "vlp.losses.TeacherMemoryBank",
    ),
    ("vlp.heads", "SSMKE", "vlp.models", "SSMKE", "vlp.models.SSMKE"),
    ("vlp.heads", "build_ssmke", "vlp.models", "build_ssmke", "vlp.models.build_ssmke"),
    ("vlp.heads", "PostLNBlock", "vlp.models", "PostLNBlock", "vlp.models.PostLNBlock"),
    ("vlp.heads", "SharedBlock", "vlp.models", "SharedBlock", "vlp.models.SharedBlock"),
    ("vlp.heads", "SSMKEHead", "vlp.models", "SSMKEHead", "vlp.models.SSMKEHead"),
    ("vlp.heads", "SSMKEOutput", "vlp.models", "SSMKEOutput", "vlp.models.SSMKEOutput"),
    ("vlp.heads", "IMAGE_TYPE", "vlp.models", "IMAGE_TYPE", "vlp.models.IMAGE_TYPE"),
    ("vlp.heads", "TEXT_TYPE", "vlp.models", "TEXT_TYPE", "vlp.models.TEXT_TYPE"),
    (
        "vlp.heads",
        "TokenTypeEmbedding",
        "vlp.models",
        "TokenTypeEmbedding",
        "vlp.models.TokenTypeEmbedding",
    ),
    (
        "vlp.heads",
        "TimmViTEncoder",
        "vlp.adapters",
        "TimmViTEncoder",
        "vlp.adapters.TimmViTEncoder",
    ),
    (
        "vlp.heads",
        "OpenClipTextEncoder",
        "vlp.adapters",
        "OpenClipTextEncoder",
        "vlp.adapters.OpenClipTextEncoder",
    ),
    (
        "vlp.heads",
        "load_pretrained",
        "vlp.adapters",
        "load_pretrained",
        "vlp.adapters.load_pretrained",
    ),
    (
        "vlp.heads",
        "load_state_dict_file",
        "vlp.adapters",
        "load_state_dict_file",
        "vlp.adapters.load_state_dict_file",
    ),
    ("vlp.heads.ssmke", "SSMKE", "vlp.models", "SSMKE", "vlp.models.SSMKE"),
    ("vlp.heads.ssmke", "SharedBlock", "vlp.models", "SharedBlock", "vlp.models.SharedBlock"),
    (
        "vlp.heads.ssmke_student",
        "build_ssmke",
        "vlp.models",
        "build_ssmke",
        "vlp.models.build_ssmke",
    ),
    (
        "vlp.heads.ssmke_student",
        "TimmViTEncoder",
        "vlp.adapters",
        "TimmViTEncoder",
        "vlp.adapters.TimmViTEncoder",
    ),
    (
        "vlp.heads.ssmke_student",
        "load_pretrained",
        "vlp.adapters",
        "load_pretrained",
        "vlp.adapters.load_pretrained",
    ),
    (
        "vlp.adapters.tokens",
        "gather_patches",
        "vlp.masking",
        "gather_tokens",
        "vlp.masking.gather_tokens",
    ),
    ("vlp.data", "ShapesDataset", "vlp.data.shapes", "ShapesDataset", "vlp.data.shapes."),
    ("vlp.data", "COLOURS", "vlp.data.shapes", "COLOURS", "vlp.data.shapes.COLOURS"),
    ("vlp.data", "Scene", "vlp.data.shapes", "Scene", "vlp.data.shapes.Scene"),
    ("vlp.data", "collate_shapes", "vlp.data.shapes", "collate_shapes", "vlp.data.shapes."),
    ("vlp.data.scene", "COLOUR_RGB", "vlp.data.shapes.scene", "COLOUR_RGB", "shapes.scene."),
    ("vlp.data.scene", "sample_scene", "vlp.data.shapes", "sample_scene", "shapes.scene."),
    ("vlp.data.captions", "short_caption", "vlp.data.shapes", "short_caption", "shapes.caption"),
    ("vlp.data.captions", "RELATIONS", "vlp.data.shapes", "RELATIONS", "shapes.captions."),
    ("vlp.data.shapes", "main", "vlp.data.shapes.dataset", "main", "shapes.dataset.main"),
]


@pytest.mark.parametrize(("old", "name", "new", "new_name", "shown"), MOVED)
def test_old_path_warns_and_returns_the_same_object(
    old: str, name: str, new: str, new_name: str, shown: str
) -> None:
    module = importlib.import_module(old)
    with pytest.warns(DeprecationWarning) as record:
        value = getattr(module, name)
    assert len(record) == 1
    message = str(record[0].message)
    assert f"{old}.{name} is deprecated" in message
    assert shown in message.split("use ")[1]
    assert f"vlp {REMOVAL}" in message
    assert record[0].filename == __file__  # attributed to the line that used the old name
    assert value is getattr(importlib.import_module(new), new_name)


def test_from_import_warns_once_at_the_importing_line() -> None:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        from vlp.heads.ssmke_student import load_state_dict_file  # noqa: F401

        from vlp.heads import SSMKE, FrozenTeacher  # noqa: F401
    assert sorted(str(w.message).split(" is ")[0] for w in record) == [
        "vlp.heads.SSMKE",
        "vlp.heads.ssmke_student.load_state_dict_file",
    ]
    assert {w.filename for w in record} == {__file__}


def test_current_names_do_not_warn() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        from vlp.adapters import TimmViTEncoder, load_pretrained  # noqa: F401
        from vlp.data import shapes_from_shards, write_shards  # noqa: F401
        from vlp.data.shapes import ShapesDataset, scene_negatives  # noqa: F401
        from vlp.heads import COSMOSHead, FrozenTeacher  # noqa: F401
        from vlp.masking import gather_tokens  # noqa: F401
        from vlp.models import SSMKE, build_ssmke  # noqa: F401


def test_unknown_names_still_raise_attribute_error() -> None:
    for module in ("vlp.heads", "vlp.data", "vlp.heads.ssmke", "vlp.adapters.tokens", "vlp.models"):
        with pytest.raises(AttributeError, match="no_such_name"):
            _ = importlib.import_module(module).no_such_name
    with pytest.raises(ImportError):
        importlib.import_module("vlp.heads.no_such_module")


def test_vlp_data_exports_only_the_generic_part() -> None:
    assert sorted(vlp.data.__all__) == [
        "MANIFEST_SUFFIX",
        "decode_shapes_sample",
        "read_manifest",
        "shapes_from_shards",
        "shard_urls",
        "write_shards",
    ]
    assert "ShapesDataset" in vlp.data.shapes.__all__
    assert "scene_negatives" in vlp.data.shapes.__all__
    assert "hard_negatives" not in vlp.data.shapes.__all__
    # Every name of the old vlp.data.scene / vlp.data.captions modules still resolves.
    old_scene = importlib.import_module("vlp.data.scene")
    old_captions = importlib.import_module("vlp.data.captions")
    assert sorted(old_scene.__all__) == sorted(shapes_scene.__all__)
    assert sorted(old_captions.__all__) == sorted([*shapes_captions.__all__, "hard_negatives"])


def test_old_hard_negatives_takes_types_and_equals_scene_negatives() -> None:
    from vlp.data.shapes import NEGATIVE_TYPES, sample_scene, scene_negatives, short_caption

    kinds = NEGATIVE_TYPES[:3]
    for seed in range(20):
        rng = random.Random(seed)
        scene = sample_scene(rng, split="test")
        caption = short_caption(scene, rng)
        with pytest.warns(DeprecationWarning, match="scene_negatives"):
            old = vlp.data.hard_negatives
        got = old(caption, scene, random.Random(seed), types=kinds)
        want = scene_negatives(caption, scene, random.Random(seed), kinds=kinds)
        assert {k: c.text for k, c in got.items()} == {k: c.text for k, c in want.items()}
        assert set(got) <= set(kinds)


def test_old_gather_patches_equals_gather_tokens() -> None:
    from vlp.masking import gather_tokens

    g = torch.Generator().manual_seed(0)
    tokens = torch.randn(3, 10, 4, generator=g)
    keep = torch.stack([torch.randperm(10, generator=g)[:6] for _ in range(3)])
    with pytest.warns(DeprecationWarning, match="vlp.masking.gather_tokens"):
        from vlp.adapters.tokens import gather_patches
    want = torch.stack([tokens[b, keep[b]] for b in range(3)])
    assert torch.equal(gather_patches(tokens, keep), want)
    assert torch.equal(gather_tokens(tokens, keep), want)


def test_shapes_command_line_runs_as_a_module() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "vlp.data.shapes", "write", "--help"],
        capture_output=True,
        text=True,
        check=True,
    )
    assert "--shard-size" in out.stdout


def test_deprecated_getattr_rejects_bad_targets() -> None:
    with pytest.raises(ValueError, match="module:name"):
        deprecated_getattr("m", {"x": "vlp.models"})
    with pytest.raises(ValueError, match="module:name"):
        deprecated_getattr("m", {"x": ":SSMKE"})
    assert moved(["a"], "p.q", public="p") == {"a": ("p.q:a", "p.a")}
