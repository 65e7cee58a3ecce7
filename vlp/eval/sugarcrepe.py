"""Reader for SugarCrepe-format JSON files (one file per hard-negative type)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vlp.eval._files import read_text

__all__ = ["SugarCrepeItem", "read_sugarcrepe", "read_sugarcrepe_file"]

_FIELDS = ("filename", "caption", "negative_caption")


@dataclass(frozen=True)
class SugarCrepeItem:
    """One SugarCrepe test item: an image, its true caption and one hard negative.

    Attributes:
        id: the item's key in its file.
        filename: image file name (relative to the image directory, e.g. COCO val2017).
        caption: the true caption.
        negative_caption: the hard-negative caption.
    """

    id: str
    filename: str
    caption: str
    negative_caption: str


def read_sugarcrepe_file(path: str | Path) -> list[SugarCrepeItem]:
    """Read one SugarCrepe JSON file.

    The file maps an id to ``{"filename": ..., "caption": ..., "negative_caption": ...}``
    (further keys are ignored), as in the benchmark's ``data/*.json``.

    Reference: Hsieh et al., "SugarCrepe", NeurIPS 2023 (released data format).

    Args:
        path: the ``.json`` file.

    Returns:
        The items in file order.

    Raises:
        ValueError: if the file is not UTF-8 JSON of that shape (naming the file and id).
        FileNotFoundError: if the file does not exist.
    """
    path, text = read_text(path)
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not valid JSON ({err})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: expected a JSON object of id -> item, got {type(data).__name__}")
    items = []
    for key, entry in data.items():
        if not isinstance(entry, dict):
            raise ValueError(f"{path}: item {key!r} must be an object, got {type(entry).__name__}")
        missing = [f for f in _FIELDS if f not in entry]
        if missing:
            raise ValueError(f"{path}: item {key!r} lacks field(s) {missing}")
        bad = [f for f in _FIELDS if not isinstance(entry[f], str)]
        if bad:
            raise ValueError(f"{path}: item {key!r} field(s) {bad} must be strings")
        items.append(SugarCrepeItem(str(key), *(entry[f] for f in _FIELDS)))
    return items


def read_sugarcrepe(
    source: str | Path | Sequence[str | Path],
) -> dict[str, list[SugarCrepeItem]]:
    """Read SugarCrepe files, keyed by negative type (the file name without ``.json``).

    Args:
        source: a directory (every ``*.json`` in it is read, sorted by name), one file,
            or a sequence of files.

    Returns:
        ``{type: items}``, e.g. ``{"replace_att": [...], "swap_obj": [...]}``.

    Raises:
        ValueError: on a malformed file, two files with the same type, or a directory
            without JSON files.
        FileNotFoundError: if a path does not exist.
    """
    if isinstance(source, (str, Path)):
        root = Path(source)
        if root.is_dir():
            paths = sorted(root.glob("*.json"))
            if not paths:
                raise ValueError(f"{root}: directory holds no .json files")
        elif root.exists():
            paths = [root]
        else:
            raise FileNotFoundError(f"{root}: no such file or directory")
    elif isinstance(source, Sequence) and all(isinstance(p, (str, Path)) for p in source):
        paths = [Path(p) for p in source]
    else:
        raise TypeError(
            f"source must be a path or a sequence of paths, got {type(source).__name__}"
        )
    out: dict[str, list[SugarCrepeItem]] = {}
    for path in paths:
        if path.stem in out:
            raise ValueError(f"two files for negative type {path.stem!r}: {path}")
        out[path.stem] = read_sugarcrepe_file(path)
    return out
