"""WebDataset shards: atomic writes with a manifest, checked reads, no URLs unless asked,
prefixes that stay inside ``out``, per-epoch reshuffling, and the rank/worker split."""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from vlp.data import (
    decode_shapes_sample,
    read_manifest,
    shapes_from_shards,
    shard_urls,
    write_shards,
)
from vlp.data.shapes import ShapesDataset
from vlp.testing import run_distributed

N = 23


@pytest.fixture(scope="module")
def samples() -> list[dict[str, Any]]:
    ds = ShapesDataset(N, split="test", seed=3, image_size=24)
    return [ds[i] for i in range(N)]


@pytest.fixture
def shards(tmp_path: Path, samples: list[dict[str, Any]]) -> Path:
    write_shards(samples, tmp_path, shard_size=5)
    return tmp_path


def indices(pipeline: Any) -> list[int]:
    return [int(s["index"]) for s in pipeline]


def test_manifest_lists_every_shard(shards: Path) -> None:
    listing = read_manifest(shards / "shapes-manifest.json")
    assert sorted(listing) == [f"shapes-00000{k}.tar" for k in range(5)]
    assert [listing[k]["samples"] for k in sorted(listing)] == [5, 5, 5, 5, 3]
    for name, entry in listing.items():
        assert entry["bytes"] == (shards / name).stat().st_size
    assert not [p for p in os.listdir(shards) if p.endswith(".partial")]
    assert indices(shapes_from_shards(shards)) == list(range(N))


def test_a_failing_writer_leaves_complete_listed_shards(
    tmp_path: Path, samples: list[dict[str, Any]]
) -> None:
    def broken() -> Any:
        yield from samples[:12]
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError, match="killed"):
        write_shards(broken(), tmp_path, shard_size=5)
    # Shards 0 and 1 finished; shard 2 (2 samples in) was discarded, never renamed.
    assert sorted(os.listdir(tmp_path)) == [
        "shapes-000000.tar", "shapes-000001.tar", "shapes-manifest.json",
    ]  # fmt: skip
    assert indices(shapes_from_shards(tmp_path)) == list(range(10))
    # A writer killed hard leaves a ".partial" file: never read (not a .tar).
    (tmp_path / ".shapes-000002.tar.partial").write_bytes(b"half a shard")
    assert indices(shapes_from_shards(tmp_path)) == list(range(10))


@pytest.mark.parametrize("damage", ["truncate", "flip", "append"])
def test_a_damaged_shard_raises_before_any_of_its_samples(shards: Path, damage: str) -> None:
    path = shards / "shapes-000002.tar"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[len(data) // 3] ^= 0xFF
    else:
        data += b"\0" * 512
    path.write_bytes(bytes(data))
    seen: list[int] = []
    with pytest.raises(ValueError, match="shapes-000002.tar.*does not match its manifest"):
        for sample in shapes_from_shards(shards):
            seen.append(int(sample["index"]))
    assert seen == list(range(10))  # shards 0 and 1 only: nothing of shard 2
    # verify=False skips the check (what follows is then up to the tar reader).
    unchecked = itertools.islice(shapes_from_shards(shards, verify=False), 10)
    assert [int(s["index"]) for s in unchecked] == list(range(10))


def test_unlisted_missing_and_unverifiable_shards(shards: Path, tmp_path_factory: Any) -> None:
    (shards / "stale-000000.tar").write_bytes((shards / "shapes-000000.tar").read_bytes())
    with pytest.raises(ValueError, match="stale-000000.tar.*not listed in the manifest"):
        list(shapes_from_shards(shards))
    os.remove(shards / "stale-000000.tar")
    listed = [str(shards / f"shapes-00000{k}.tar") for k in range(5)]
    os.remove(shards / "shapes-000004.tar")
    with pytest.raises(ValueError, match="listed in its manifest but missing"):
        list(shapes_from_shards(listed))
    bare = tmp_path_factory.mktemp("bare")
    (bare / "x-000000.tar").write_bytes((shards / "shapes-000000.tar").read_bytes())
    assert indices(shapes_from_shards(bare)) == list(range(5))  # no manifest: read as is
    with pytest.raises(ValueError, match="has no manifest"):
        list(shapes_from_shards(bare, verify=True))
    (shards / "broken-manifest.json").write_text("{")
    with pytest.raises(ValueError, match="broken-manifest.json is not a readable shard manifest"):
        list(shapes_from_shards(shards))


def test_urls_are_refused_unless_allowed(shards: Path, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    for source in (f"pipe:touch {marker}", "http://example.com/a.tar", "s3://b/a.tar"):
        with pytest.raises(ValueError, match="URL; only local paths are used unless allow_urls"):
            shapes_from_shards(source)
        with pytest.raises(ValueError, match="allow_urls"):
            shapes_from_shards([str(shards / "shapes-000000.tar"), source])
    with pytest.raises(ValueError, match="out 'pipe:touch"):
        write_shards([], f"pipe:touch {marker}")
    assert not marker.exists()
    # Explicit opt-in: webdataset opens the URL (here a harmless `cat`).
    url = f"pipe:cat {shards / 'shapes-000001.tar'}"
    assert indices(shapes_from_shards(url, allow_urls=True)) == list(range(5, 10))


@pytest.mark.parametrize("prefix", ["../escaped", "/abs/shapes", "a/b", "..", ".hidden", ""])
def test_prefix_cannot_leave_out(
    tmp_path: Path, prefix: str, samples: list[dict[str, Any]]
) -> None:
    with pytest.raises(ValueError, match="prefix must be a plain file-name prefix"):
        write_shards(samples[:2], tmp_path / "out", prefix=prefix)
    assert not (tmp_path / "escaped").exists()
    with pytest.raises(TypeError, match="prefix must be a str"):
        write_shards(samples[:2], tmp_path, prefix=3)  # type: ignore[arg-type]


def test_percent_in_prefix_is_literal(tmp_path: Path, samples: list[dict[str, Any]]) -> None:
    paths = write_shards(samples[:7], tmp_path, shard_size=5, prefix="50%-%d")
    assert [Path(p).name for p in paths] == ["50%-%d-000000.tar", "50%-%d-000001.tar"]
    assert indices(shapes_from_shards(tmp_path)) == list(range(7))


def test_epochs_reshuffle_reproducibly(shards: Path) -> None:
    orders = [indices(shapes_from_shards(shards, shuffle=4, seed=0, epoch=e)) for e in range(3)]
    for order in orders:
        assert sorted(order) == list(range(N))
    assert len({tuple(o[:5]) for o in orders}) == 3  # a new order every epoch
    assert indices(shapes_from_shards(shards, shuffle=4, seed=0, epoch=1)) == orders[1]
    assert indices(shapes_from_shards(shards, shuffle=4, seed=1, epoch=1)) != orders[1]
    assert indices(shapes_from_shards(shards, epoch=2)) == list(range(N))  # shuffle=0
    with pytest.raises(ValueError, match="epoch must be an int >= 0"):
        shapes_from_shards(shards, epoch=-1)


def _read_split(rank: int, world: int, directory: str) -> dict[int, list[int]]:
    out = {}
    for epoch in (0, 1):
        pipeline = shapes_from_shards(directory, shuffle=3, seed=5, epoch=epoch)
        loader = torch.utils.data.DataLoader(
            pipeline, batch_size=None, num_workers=2, multiprocessing_context="fork"
        )
        out[epoch] = [int(s["index"]) for s in loader]
    return out


def test_split_by_rank_and_worker(shards: Path) -> None:
    # 2 ranks x 2 DataLoader workers: without the rank or the worker split some samples
    # would be read twice.
    results = run_distributed(_read_split, str(shards))
    for epoch in (0, 1):
        per_rank = [r[epoch] for r in results]
        everything = sorted(i for rank in per_rank for i in rank)
        assert everything == list(range(N)), f"epoch {epoch}: every sample exactly once"
        # Whole shards per rank: the 5 shards are dealt 3 / 2.
        shard_sets = [{i // 5 for i in rank} for rank in per_rank]
        assert not shard_sets[0] & shard_sets[1]
        assert sorted(len(s) for s in shard_sets) == [2, 3]
    assert [r[0] for r in results] != [r[1] for r in results]  # epochs differ


@pytest.mark.parametrize(
    ("call", "name", "error"),
    [
        (lambda: read_manifest(None), "path", TypeError),
        (lambda: read_manifest(3), "path", TypeError),
        (lambda: shard_urls(None), "source", TypeError),
        (lambda: shard_urls(7), "source", TypeError),
        (lambda: shard_urls(["a.tar", 3]), "source", TypeError),
        (lambda: shard_urls("a.tar", allow_urls="yes"), "allow_urls", TypeError),
        (lambda: decode_shapes_sample(None), "item", TypeError),
        (lambda: decode_shapes_sample(()), "item", TypeError),
        (lambda: decode_shapes_sample((np.zeros((4, 4, 3), np.uint8), "x")), "item", TypeError),
        (lambda: decode_shapes_sample((np.zeros((4, 4)), {})), "item", ValueError),
    ],
)
def test_wds_helpers_name_bad_argument(call: Any, name: str, error: type[Exception]) -> None:
    # Issue 17 fuzz findings: these used to raise Python's own unpacking/iteration errors.
    with pytest.raises(error, match=rf"\b{name}\b"):
        call()


def test_decode_shapes_sample_valid_pair() -> None:
    image = np.arange(4 * 5 * 3, dtype=np.uint8).reshape(4, 5, 3)
    sample = decode_shapes_sample((image, {"caption": "a red square"}))
    assert sample["caption"] == "a red square"
    assert sample["image"].shape == (3, 4, 5)
    assert torch.equal(sample["image"], torch.from_numpy(image).permute(2, 0, 1))
