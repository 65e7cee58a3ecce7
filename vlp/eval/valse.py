"""VALSE: reader for its JSON files (one per piece), scored like SugarCrepe.

Parcalabescu et al., "VALSE: A Task-Independent Benchmark for Vision and Language Models
Centered on Linguistic Phenomena", ACL 2022. Each file of the benchmark's ``data/``
directory (``existence.json``, ``plurals.json``, ``counting-hard.json``,
``relations.json``, ``action-replacement.json``, ``actant-swap.json``,
``coreference-standard.json``, ``foil-it.json``, ...) maps an id to an image, a caption
and a foil; read from local disk, nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from vlp.eval._files import (
    BenchmarkFileError,
    iter_json_entries,
    read_text,
    require,
    resolve_files,
)

__all__ = ["ValseItem", "read_valse", "read_valse_file"]

#: Annotators (of 3) who must pick the caption, not the foil, for an item to be valid.
VALID_VOTES = 2


@dataclass(frozen=True)
class ValseItem:
    """One VALSE item: an image, its caption and a foil that differs in one phenomenon.

    Attributes:
        id: the item's key in its file.
        piece: the file name without ``.json`` (e.g. ``"counting-hard"``).
        dataset: the source data set of the image (e.g. ``"SWiG"``, ``"visual7w"``).
        image_file: the image file name within that data set.
        caption: the true caption.
        foil: the foiled caption.
        valid: at least 2 of the 3 annotators chose the caption and not the foil (the
            benchmark's definition of a valid item; ``False`` when the file has no
            ``mturk`` votes).
        phenomenon: ``linguistic_phenomena`` of the item (``""`` when absent).
    """

    id: str
    piece: str
    dataset: str
    image_file: str
    caption: str
    foil: str
    valid: bool
    phenomenon: str


def read_valse_file(path: str | Path, *, valid_only: bool = True) -> list[ValseItem]:
    """Read one VALSE piece.

    The file maps an id to ``{"dataset", "image_file", "caption", "foil", "mturk":
    {"caption": n, "foil": n, "other": n}, ...}`` (further keys ignored).

    Reference: Parcalabescu et al., ACL 2022 (VALSE, released data format and its
    validity rule ``mturk["caption"] >= 2``).

    Args:
        path: the ``.json`` file.
        valid_only: keep only the items the annotators validated (the benchmark's
            reported setting); items then need ``mturk`` votes.

    Returns:
        The items in file order.

    Raises:
        FileNotFoundError: if the file does not exist.
        ValueError: on a malformed file (naming the file and the line of the entry).
    """
    file, text = read_text(path)
    items = []
    for key, entry, line in iter_json_entries(file, text):
        what = f"item {key!r}"
        require(
            file,
            line,
            what,
            entry,
            {"dataset": str, "image_file": str, "caption": str, "foil": str},
        )
        votes = entry.get("mturk")
        if votes is None:
            if valid_only:
                raise BenchmarkFileError(
                    f"{file}:{line}: {what} lacks 'mturk' votes, needed for valid_only=True"
                )
            valid = False
        else:
            require(file, line, f"{what} 'mturk'", votes, {"caption": int})
            valid = votes["caption"] >= VALID_VOTES
        if valid_only and not valid:
            continue
        phenomenon = entry.get("linguistic_phenomena", "")
        items.append(
            ValseItem(
                id=key,
                piece=file.stem,
                dataset=entry["dataset"],
                image_file=entry["image_file"],
                caption=entry["caption"],
                foil=entry["foil"],
                valid=valid,
                phenomenon=phenomenon if isinstance(phenomenon, str) else str(phenomenon),
            )
        )
    return items


def read_valse(
    source: str | Path | Sequence[str | Path], *, valid_only: bool = True
) -> dict[str, list[ValseItem]]:
    """Read VALSE files, keyed by piece (the file name without ``.json``).

    Args:
        source: the benchmark's ``data`` directory (every ``*.json`` in it, sorted), one
            file, or a sequence of files.
        valid_only: see :func:`read_valse_file`.

    Returns:
        ``{piece: items}``, e.g. ``{"existence": [...], "plurals": [...]}``.

    Raises:
        ValueError: on a malformed file, two files of one piece, or a directory without
            JSON files.
        FileNotFoundError: if a path does not exist.
    """
    out: dict[str, list[ValseItem]] = {}
    for path in resolve_files(source, "*.json"):
        if path.stem in out:
            raise ValueError(f"two files for VALSE piece {path.stem!r}: {path}")
        out[path.stem] = read_valse_file(path, valid_only=valid_only)
    return out
