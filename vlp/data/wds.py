"""WebDataset shards of the shapes data set: a writer and a reader pipeline.

Shards are plain tar files in the layout img2dataset produces: one ``.png`` (or
``.jpg``) and one ``.json`` member per sample, sharing a key. The reader is an ordinary
``webdataset`` pipeline (``DataPipeline`` of shard list, tar expansion, shuffle, decode)
split by node and by DataLoader worker, so the same code reads shards on a laptop and under
``torchrun`` on many GPUs.

**Safe shards.** :func:`write_shards` writes each shard under a temporary name and renames
it into place only once it is complete, then rewrites ``{prefix}-manifest.json`` (again
atomically) with the sample count, size and SHA-256 of every finished shard. A writer killed
at any point leaves only complete shards, all listed. The reader checks each shard against
its manifest before reading it, so a truncated or altered shard raises before any of its
samples is yielded. Only local paths are read or written: ``pipe:`` URLs (which run a shell
command) and other URL schemes are refused unless the caller passes ``allow_urls=True``.
"""

from __future__ import annotations

import glob
import hashlib
import io
import json
import os
import random
import re
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image

from vlp._checks import check_bool
from vlp.distributed import get_rank, get_world_size

__all__ = [
    "MANIFEST_SUFFIX",
    "decode_shapes_sample",
    "read_manifest",
    "shapes_from_shards",
    "shard_urls",
    "write_shards",
]

#: A writer's manifest is ``{prefix}{MANIFEST_SUFFIX}`` in the shard directory.
MANIFEST_SUFFIX = "-manifest.json"
_MANIFEST_FORMAT = "vlp-shards/1"
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+):")  # two letters at least: not "C:"


def _url_scheme(value: str) -> str | None:
    match = _SCHEME.match(value)
    return None if match is None else match.group(1)


def _check_local(name: str, value: str, allow_urls: bool) -> None:
    scheme = _url_scheme(value)
    if scheme is not None and scheme != "file" and not allow_urls:
        raise ValueError(
            f"{name} {value!r} is a {scheme}: URL; only local paths are used unless "
            "allow_urls=True is passed (a 'pipe:' URL runs a shell command)"
        )


def _check_prefix(prefix: object) -> str:
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    separators = {"/", "\\", os.sep} | ({os.altsep} if os.altsep else set())
    if (
        not prefix
        or prefix in (".", "..")
        or any(sep in prefix for sep in separators)
        or "\0" in prefix
        or prefix.startswith(".")
    ):
        raise ValueError(
            "prefix must be a plain file-name prefix that stays inside out (no path "
            f"separator, no '..', not absolute, not starting with '.'), got {prefix!r}"
        )
    return prefix


def _sha256(path: str) -> tuple[str, int]:
    digest = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
            size += len(block)
    return digest.hexdigest(), size


def _replace_atomically(path: str, data: bytes) -> None:
    tmp = os.path.join(os.path.dirname(path), f".{os.path.basename(path)}.partial")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _encode_sample(sample: dict[str, Any], key: str, image_format: str) -> dict[str, Any]:
    image = sample["image"]
    if not (isinstance(image, torch.Tensor) and image.dtype == torch.uint8):
        raise TypeError(f"sample['image'] must be a uint8 tensor, got {type(image)}")
    buf = io.BytesIO()
    pil = Image.fromarray(image.permute(1, 2, 0).numpy())
    if image_format == "png":
        pil.save(buf, format="PNG")
    else:
        pil.save(buf, format="JPEG", quality=95)
    meta = {k: v for k, v in sample.items() if k != "image"}
    return {"__key__": key, image_format: buf.getvalue(), "json": meta}


def write_shards(
    samples: Iterable[dict[str, Any]],
    out: str | os.PathLike[str],
    *,
    shard_size: int = 1000,
    image_format: str = "png",
    prefix: str = "shapes",
) -> list[str]:
    """Write samples to WebDataset tar shards, atomically, with a manifest.

    Each shard is written as ``.{name}.partial`` and renamed to ``{prefix}-{NNNNNN}.tar``
    once complete; after each rename ``{prefix}-manifest.json`` is rewritten (atomically)
    with every finished shard's name, sample count, size in bytes and SHA-256. Killed at
    any point, the writer leaves complete shards only, each listed in the manifest (a
    leftover ``.partial`` file is never read: it does not end in ``.tar``).

    Args:
        samples: samples as produced by :class:`vlp.data.shapes.ShapesDataset` (an
            ``image`` ``(3, H, W)`` uint8 tensor plus JSON-able fields).
        out: output directory (created if missing); a local path, never a URL.
        shard_size: samples per shard (>= 1).
        image_format: ``"png"`` (lossless: read back bit-exact) or ``"jpg"``.
        prefix: shard file name prefix: a plain name (no path separator, no ``..``, not
            absolute, not starting with ``.``), so shards cannot land outside ``out``. A
            ``%`` is kept literally.

    Returns:
        The paths of the written shards, in order.

    Raises:
        ValueError: a bad ``shard_size``, ``image_format`` or ``prefix``, or an ``out``
            that is a URL (``pipe:...``, ``s3://...``).
        TypeError: a sample whose image is not a uint8 tensor (the shard being written
            is discarded; finished shards stay listed).
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be an int >= 1, got {shard_size!r}")
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    prefix = _check_prefix(prefix)
    directory = os.fspath(out)
    _check_local("out", directory, allow_urls=False)
    os.makedirs(directory, exist_ok=True)
    manifest_path = os.path.join(directory, prefix + MANIFEST_SUFFIX)
    entries: list[dict[str, Any]] = []
    paths: list[str] = []
    iterator = iter(samples)
    index = 0
    while True:
        batch = []
        for sample in iterator:
            batch.append(sample)
            if len(batch) == shard_size:
                break
        if not batch:
            break
        name = f"{prefix}-{len(paths):06d}.tar"
        final = os.path.join(directory, name)
        tmp = os.path.join(directory, f".{name}.partial")
        try:
            with open(tmp, "wb") as f:
                writer = wds.TarWriter(f)
                for sample in batch:
                    writer.write(_encode_sample(sample, f"{index:09d}", image_format))
                    index += 1
                writer.close()
                f.flush()
                os.fsync(f.fileno())
        except BaseException:
            if os.path.exists(tmp):
                os.remove(tmp)
            raise
        digest, size = _sha256(tmp)
        os.replace(tmp, final)
        paths.append(final)
        entries.append({"name": name, "samples": len(batch), "bytes": size, "sha256": digest})
        manifest = {"format": _MANIFEST_FORMAT, "prefix": prefix, "shards": entries}
        _replace_atomically(manifest_path, json.dumps(manifest, indent=1).encode())
        if len(batch) < shard_size:
            break
    return paths


def read_manifest(path: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """The shards a manifest lists: ``{shard file name: {"samples", "bytes", "sha256"}}``.

    Raises:
        TypeError: a ``path`` that is not a path.
        ValueError: a file that is not a vlp shard manifest (named in the message).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = os.fspath(path)
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        if data.get("format") != _MANIFEST_FORMAT:
            raise ValueError(f"format is {data.get('format')!r}, not {_MANIFEST_FORMAT!r}")
        return {
            str(e["name"]): {"samples": int(e["samples"]), "bytes": int(e["bytes"]),
                             "sha256": str(e["sha256"])}
            for e in data["shards"]
        }  # fmt: skip
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise ValueError(f"path {path} is not a readable shard manifest: {err}") from err


def shard_urls(
    source: str | os.PathLike[str] | Sequence[str], *, allow_urls: bool = False
) -> list[str]:
    """Resolve a shard source to its list of shard URLs.

    Args:
        source: a directory (its ``*.tar`` files, sorted), a brace pattern such as
            ``"dir/shapes-{000000..000009}.tar"`` (expanded), a single path, or a list.
        allow_urls: let URLs with a scheme through (``pipe:``, ``http://``, ``s3://``...,
            opened by webdataset); off by default, since a ``pipe:`` URL runs a shell
            command.

    Returns:
        The URLs, in order.

    Raises:
        TypeError: a ``source`` that is neither a path nor a list of paths.
        ValueError: an empty directory or list, or a URL without ``allow_urls``.
    """
    from webdataset.shardlists import expand_urls

    check_bool("allow_urls", allow_urls)
    if not isinstance(source, (str, os.PathLike, Iterable)):
        raise TypeError(f"source must be a path or a list of paths, got {type(source).__name__}")
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        _check_local("source", path, allow_urls)
        if os.path.isdir(path):
            urls = sorted(glob.glob(os.path.join(path, "*.tar")))
            if not urls:
                raise ValueError(f"source directory {path!r} holds no .tar shards")
            return urls
        urls = list(expand_urls(path))
    else:
        urls = []
        for item in source:
            if not isinstance(item, (str, os.PathLike)):
                raise TypeError(f"source must hold paths, got {type(item).__name__}")
            urls.extend(expand_urls(os.fspath(item)))
    if not urls:
        raise ValueError("source names no shards")
    for url in urls:
        _check_local("source", url, allow_urls)
    return urls


def decode_shapes_sample(item: tuple[np.ndarray, dict[str, Any]]) -> dict[str, Any]:
    """Turn a decoded ``(image, json)`` pair back into a shapes sample dict.

    Args:
        item: the ``(H, W, 3)`` uint8 image array and the JSON metadata.

    Returns:
        The sample in :func:`vlp.data.shapes.generate_sample` form (image ``(3, H, W)``
        uint8 tensor).

    Raises:
        TypeError: an ``item`` that is not an ``(image array, dict)`` pair.
    """
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        raise TypeError(f"item must be an (image, metadata) pair, got {type(item).__name__}")
    image, meta = item
    if not isinstance(meta, dict):
        raise TypeError(f"item[1] (the metadata) must be a dict, got {type(meta).__name__}")
    if not isinstance(image, (np.ndarray, torch.Tensor)) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f"item[0] must be an (H, W, 3) image array, got {type(image).__name__}"
            f" of shape {tuple(getattr(image, 'shape', ()))}"
        )
    sample = dict(meta)
    pixels = np.array(image, dtype=np.uint8, copy=True)
    sample["image"] = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
    return sample


class _Manifests:
    """The manifests of the directories of local shards, loaded once per directory."""

    def __init__(self) -> None:
        self._by_dir: dict[str, dict[str, dict[str, Any]] | None] = {}

    def listing(self, directory: str) -> dict[str, dict[str, Any]] | None:
        if directory not in self._by_dir:
            found = sorted(glob.glob(os.path.join(glob.escape(directory), "*" + MANIFEST_SUFFIX)))
            listing: dict[str, dict[str, Any]] | None = None
            for path in found:
                listing = {**(listing or {}), **read_manifest(path)}
            self._by_dir[directory] = listing
        return self._by_dir[directory]

    def entry(self, url: str, verify: bool | None) -> dict[str, Any] | None:
        """The manifest entry of a local shard; ``None`` if it is not to be checked."""
        if verify is False or _url_scheme(url) not in (None, "file"):
            return None
        path = url.removeprefix("file:")
        listing = self.listing(os.path.dirname(os.path.abspath(path)))
        name = os.path.basename(path)
        if listing is None:
            if verify:
                raise ValueError(
                    f"shard {url!r} has no manifest (*{MANIFEST_SUFFIX}) in its directory, "
                    "and verify=True; write shards with vlp.data.write_shards, or pass "
                    "verify=False"
                )
            return None
        if name not in listing:
            raise ValueError(
                f"shard {url!r} is not listed in the manifest of its directory (a leftover "
                "of an earlier write, or a foreign file): remove it, or pass verify=False"
            )
        return listing[name]


def _check_shard(url: str, entry: dict[str, Any]) -> None:
    path = url.removeprefix("file:")
    if not os.path.exists(path):
        raise ValueError(f"shard {url!r} is listed in its manifest but missing")
    digest, size = _sha256(path)
    if (size, digest) != (entry["bytes"], entry["sha256"]):
        raise ValueError(
            f"shard {url!r} does not match its manifest: expected {entry['bytes']} bytes "
            f"with SHA-256 {entry['sha256'][:16]}..., got {size} bytes with "
            f"{digest[:16]}...; the shard is truncated or corrupt (write it again)"
        )


def _worker() -> tuple[int, int]:
    info = torch.utils.data.get_worker_info()
    return (0, 1) if info is None else (info.id, info.num_workers)


class _ShardList(torch.utils.data.IterableDataset[dict[str, Any]]):
    """This rank's and this worker's shards, in the epoch's order, each checked first.

    The shard order is a permutation drawn from ``(seed, epoch)``, the same on every rank
    (so that ``order[rank::world]`` partitions the shards); each worker then takes every
    ``num_workers``-th shard of its rank's share.
    """

    def __init__(
        self,
        urls: list[str],
        *,
        shuffle: bool,
        seed: int,
        epoch: int,
        split_by_node: bool,
        verify: bool | None,
    ) -> None:
        super().__init__()
        self.urls, self.shuffle, self.seed, self.epoch = urls, shuffle, seed, epoch
        self.split_by_node, self.verify = split_by_node, verify

    def __iter__(self) -> Iterator[dict[str, Any]]:
        order = list(self.urls)
        if self.shuffle:
            random.Random(f"shards/{self.seed}/{self.epoch}").shuffle(order)
        if self.split_by_node:
            rank, world = get_rank(), get_world_size()
            if len(order) < world:
                raise ValueError(
                    f"{len(order)} shard(s) cannot be split over {world} ranks: write at "
                    "least one shard per rank (a smaller shard_size), or pass "
                    "split_by_node=False"
                )
            order = order[rank::world]
        worker, workers = _worker()
        manifests = _Manifests()
        for url in order[worker::workers]:
            entry = manifests.entry(url, self.verify)
            if entry is not None:
                _check_shard(url, entry)
            yield {"url": url}


def _sample_shuffle(bufsize: int, seed: int, epoch: int) -> Any:
    def stage(samples: Iterable[dict[str, Any]]) -> Iterator[dict[str, Any]]:
        worker, _ = _worker()
        rng = random.Random(f"samples/{seed}/{epoch}/{get_rank()}/{worker}")
        buffer: list[dict[str, Any]] = []
        for sample in samples:
            buffer.append(sample)
            if len(buffer) >= bufsize:
                k = rng.randrange(len(buffer))
                buffer[k], buffer[-1] = buffer[-1], buffer[k]
                yield buffer.pop()
        rng.shuffle(buffer)
        yield from buffer

    return stage


def _check_count(name: str, value: object, low: int = 0) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name} must be an int >= {low}, got {value!r}")
    return value


def shapes_from_shards(
    source: str | os.PathLike[str] | Sequence[str],
    *,
    shuffle: int = 0,
    seed: int = 0,
    epoch: int = 0,
    split_by_node: bool = True,
    verify: bool | None = None,
    allow_urls: bool = False,
) -> wds.DataPipeline:
    """Read shapes shards through a ``webdataset`` pipeline, one epoch at a time.

    Stages: this rank's and worker's shards (checked against their manifest), tar
    expansion, an optional shuffle buffer, ``decode("rgb8")``, ``to_tuple("png;jpg",
    "json")`` and :func:`decode_shapes_sample`. Wrap it in a ``torch.utils.data.DataLoader``
    with :func:`vlp.data.shapes.collate_shapes`, and build it again (or with the next
    ``epoch``) for every epoch.

    **Multi-node split.** With ``split_by_node`` (the default) and ``torch.distributed``
    initialised, the shards of the epoch's order are dealt out by global rank,
    ``order[rank::world]``, and each DataLoader worker takes every ``num_workers``-th of
    its rank's shards: every shard is read by exactly one worker of one rank per epoch,
    however many nodes. Each rank needs at least one shard (more shards than ranks times
    workers keeps every worker busy); ranks may get different sample counts when the
    shards do not divide evenly, which the losses handle (uneven and even empty batches).

    **Epochs.** With ``shuffle > 0`` the shard order is drawn from ``(seed, epoch)`` (the
    same on every rank) and the sample buffer from ``(seed, epoch, rank, worker)``, so
    each epoch sees a new order, reproducibly; ``shuffle=0`` keeps the written order.

    Args:
        source: a directory of shards, a brace pattern, a path or a list of them.
        shuffle: sample shuffle buffer size; 0 keeps the written order (and shard order).
        seed: seed of the shard and sample shuffles; the same on every rank.
        epoch: the epoch (``>= 0``); reshuffles shards and samples when ``shuffle > 0``.
        split_by_node: give each distributed rank its own shards.
        verify: check each local shard against the manifest of its directory (size and
            SHA-256) before reading it, so a truncated or altered shard raises before
            yielding a sample. ``None``: when a manifest exists (then a shard it does not
            list is an error too); ``True``: always (no manifest is an error); ``False``:
            never.
        allow_urls: read URLs with a scheme (``pipe:``, ``http://``, ``s3://``...) through
            webdataset; refused by default, since a ``pipe:`` URL runs a shell command.

    Returns:
        An iterable ``webdataset.DataPipeline`` of sample dicts.

    Raises:
        ValueError: bad arguments, a URL without ``allow_urls``, fewer shards than ranks,
            or (while iterating, before the shard's first sample) a shard that does not
            match its manifest.
    """
    _check_count("shuffle", shuffle)
    _check_count("seed", seed)
    _check_count("epoch", epoch)
    for name, flag in (("split_by_node", split_by_node), ("allow_urls", allow_urls)):
        if not isinstance(flag, bool):
            raise TypeError(f"{name} must be a bool, got {type(flag).__name__}")
    if verify is not None and not isinstance(verify, bool):
        raise TypeError(f"verify must be a bool or None, got {type(verify).__name__}")
    urls = shard_urls(source, allow_urls=allow_urls)
    shards = _ShardList(
        urls, shuffle=shuffle > 0, seed=seed, epoch=epoch, split_by_node=split_by_node,
        verify=verify,
    )  # fmt: skip
    stages: list[Any] = [shards, wds.tarfile_to_samples()]
    if shuffle:
        stages.append(_sample_shuffle(shuffle, seed, epoch))
    stages += [wds.decode("rgb8"), wds.to_tuple("png;jpg", "json"), wds.map(decode_shapes_sample)]
    return wds.DataPipeline(*stages)
