"""WebDataset shards of the shapes data set: a writer and a reader pipeline.

Shards are plain tar files in the layout img2dataset produces: one ``.png`` (or
``.jpg``) and one ``.json`` member per sample, sharing a key. The reader is an ordinary
``webdataset`` pipeline (``WebDataset(...).decode(...).to_tuple(...)``) split by node
and by DataLoader worker, so the same code reads shards on a laptop and under
``torchrun`` on many GPUs.
"""

from __future__ import annotations

import glob
import io
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import webdataset as wds
from PIL import Image

__all__ = ["decode_shapes_sample", "shapes_from_shards", "shard_urls", "write_shards"]


def write_shards(
    samples: Iterable[dict[str, Any]],
    out: str | os.PathLike[str],
    *,
    shard_size: int = 1000,
    image_format: str = "png",
    prefix: str = "shapes",
) -> list[str]:
    """Write samples to WebDataset tar shards with ``webdataset.ShardWriter``.

    Args:
        samples: samples as produced by :class:`vlp.data.ShapesDataset` (an ``image``
            ``(3, H, W)`` uint8 tensor plus JSON-able fields).
        out: output directory (created if missing).
        shard_size: samples per shard (>= 1).
        image_format: ``"png"`` (lossless: read back bit-exact) or ``"jpg"``.
        prefix: shard file name prefix; shards are ``{prefix}-{NNNNNN}.tar``.

    Returns:
        The paths of the written shards, in order.
    """
    if isinstance(shard_size, bool) or not isinstance(shard_size, int) or shard_size < 1:
        raise ValueError(f"shard_size must be an int >= 1, got {shard_size!r}")
    if image_format not in ("png", "jpg"):
        raise ValueError(f"image_format must be 'png' or 'jpg', got {image_format!r}")
    os.makedirs(out, exist_ok=True)
    pattern = os.path.join(os.fspath(out), f"{prefix}-%06d.tar")
    paths: list[str] = []
    with wds.ShardWriter(pattern, maxcount=shard_size, verbose=0) as sink:
        for k, sample in enumerate(samples):
            if k % shard_size == 0:
                paths.append(pattern % (k // shard_size))
            image = sample["image"]
            if not (isinstance(image, torch.Tensor) and image.dtype == torch.uint8):
                raise TypeError(f"sample['image'] must be a uint8 tensor, got {type(image)}")
            buf = io.BytesIO()
            pil = Image.fromarray(image.permute(1, 2, 0).numpy())
            if image_format == "png":
                pil.save(buf, format="PNG")
            else:
                pil.save(buf, format="JPEG", quality=95)
            meta = {key: value for key, value in sample.items() if key != "image"}
            sink.write({"__key__": f"{k:09d}", image_format: buf.getvalue(), "json": meta})
    return paths


def shard_urls(source: str | os.PathLike[str] | Sequence[str]) -> list[str] | str:
    """Resolve a directory of shards to its sorted ``.tar`` files.

    Args:
        source: a directory, a brace pattern such as ``"dir/shapes-{000000..000009}.tar"``
            (passed through to webdataset), or a list of URLs.

    Returns:
        The URLs webdataset should read.
    """
    if isinstance(source, (str, os.PathLike)):
        path = os.fspath(source)
        if os.path.isdir(path):
            urls = sorted(glob.glob(os.path.join(path, "*.tar")))
            if not urls:
                raise ValueError(f"source directory {path!r} holds no .tar shards")
            return urls
        return path
    return [os.fspath(u) for u in source]


def decode_shapes_sample(item: tuple[np.ndarray, dict[str, Any]]) -> dict[str, Any]:
    """Turn a decoded ``(image, json)`` pair back into a shapes sample dict.

    Args:
        item: the ``(H, W, 3)`` uint8 image array and the JSON metadata.

    Returns:
        The sample in :func:`vlp.data.shapes.generate_sample` form (image ``(3, H, W)``
        uint8 tensor).
    """
    image, meta = item
    sample = dict(meta)
    pixels = np.array(image, dtype=np.uint8, copy=True)
    sample["image"] = torch.from_numpy(pixels).permute(2, 0, 1).contiguous()
    return sample


def shapes_from_shards(
    source: str | os.PathLike[str] | Sequence[str],
    *,
    shuffle: int = 0,
    seed: int = 0,
    split_by_node: bool = True,
) -> wds.WebDataset:
    """Read shapes shards through a ``webdataset`` pipeline.

    The pipeline is ``WebDataset(urls).decode("rgb8").to_tuple("png;jpg", "json")``
    followed by :func:`decode_shapes_sample`; shards are split across ``torchrun`` ranks
    (``webdataset.split_by_node``) and DataLoader workers. Wrap it in a
    ``torch.utils.data.DataLoader`` with :func:`vlp.data.collate_shapes`.

    Args:
        source: a directory of shards, a brace pattern or a list of URLs.
        shuffle: sample shuffle buffer size; 0 keeps the written order (and the shard
            order).
        seed: seed of the shard and sample shuffles.
        split_by_node: give each distributed rank its own shards (needs at least as
            many shards as ranks).

    Returns:
        An iterable ``webdataset.WebDataset`` of sample dicts.
    """
    if isinstance(shuffle, bool) or not isinstance(shuffle, int) or shuffle < 0:
        raise ValueError(f"shuffle must be a non-negative int, got {shuffle!r}")
    dataset = wds.WebDataset(
        shard_urls(source),
        shardshuffle=100 if shuffle else False,
        nodesplitter=wds.split_by_node if split_by_node else wds.single_node_only,
        workersplitter=wds.split_by_worker,
        seed=seed,
        empty_check=False,
    )
    if shuffle:
        dataset = dataset.shuffle(shuffle, seed=seed)
    return dataset.decode("rgb8").to_tuple("png;jpg", "json").map(decode_shapes_sample)
