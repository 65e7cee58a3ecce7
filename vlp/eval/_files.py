"""Reading benchmark annotation files with errors that name the file and line."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "BenchmarkFileError",
    "iter_json_entries",
    "iter_jsonl",
    "read_text",
    "require",
    "resolve_files",
]

_WHITESPACE = " \t\n\r"


class BenchmarkFileError(ValueError):
    """A malformed benchmark file; the message names the file and the line."""


def _line(text: str, pos: int) -> int:
    return text.count("\n", 0, pos) + 1


def _skip(text: str, pos: int) -> int:
    while pos < len(text) and text[pos] in _WHITESPACE:
        pos += 1
    return pos


def _decode(path: Path, text: str, pos: int) -> tuple[Any, int]:
    try:
        return json.JSONDecoder().raw_decode(text, pos)
    except json.JSONDecodeError as err:
        raise BenchmarkFileError(f"{path}:{err.lineno}: not valid JSON ({err.msg})") from err


def iter_json_entries(path: Path, text: str) -> Iterator[tuple[str, Any, int]]:
    """The entries of a top-level JSON object or array, with the line each starts on.

    Yields:
        ``(key, value, line)``: the object's key, or the array index as a string.

    Raises:
        BenchmarkFileError: on invalid JSON or a top level that is neither.
    """
    pos = _skip(text, 0)
    if pos == len(text) or text[pos] not in "[{":
        raise BenchmarkFileError(
            f"{path}:{_line(text, pos)}: expected a JSON object or array at the top level"
        )
    is_object = text[pos] == "{"
    close = "}" if is_object else "]"
    pos = _skip(text, pos + 1)
    index = 0
    if pos < len(text) and text[pos] == close:
        return
    while True:
        start = pos
        if is_object:
            key, pos = _decode(path, text, pos)
            if not isinstance(key, str):
                raise BenchmarkFileError(f"{path}:{_line(text, start)}: expected a string key")
            pos = _skip(text, pos)
            if pos >= len(text) or text[pos] != ":":
                raise BenchmarkFileError(f"{path}:{_line(text, pos)}: expected ':' after a key")
            pos = _skip(text, pos + 1)
        else:
            key = str(index)
        value, pos = _decode(path, text, pos)
        yield key, value, _line(text, start)
        index += 1
        pos = _skip(text, pos)
        if pos < len(text) and text[pos] == ",":
            pos = _skip(text, pos + 1)
            continue
        if pos < len(text) and text[pos] == close:
            if _skip(text, pos + 1) != len(text):
                raise BenchmarkFileError(
                    f"{path}:{_line(text, pos + 1)}: unexpected data after the top-level value"
                )
            return
        raise BenchmarkFileError(f"{path}:{_line(text, pos)}: expected ',' or '{close}'")


def iter_jsonl(path: Path, text: str) -> Iterator[tuple[int, Any]]:
    """The JSON value on each non-blank line of a JSON-lines file, with its line number."""
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        try:
            yield number, json.loads(line)
        except json.JSONDecodeError as err:
            raise BenchmarkFileError(f"{path}:{number}: not valid JSON ({err.msg})") from err


def require(
    path: Path, line: int, what: str, entry: Any, fields: Mapping[str, type | tuple[type, ...]]
) -> None:
    """Check that ``entry`` is an object holding ``fields`` of the given types."""
    if not isinstance(entry, dict):
        raise BenchmarkFileError(
            f"{path}:{line}: {what} must be a JSON object, got {type(entry).__name__}"
        )
    missing = [f for f in fields if f not in entry]
    if missing:
        raise BenchmarkFileError(f"{path}:{line}: {what} lacks field(s) {missing}")
    for name, kind in fields.items():
        value = entry[name]
        kinds = kind if isinstance(kind, tuple) else (kind,)
        if (isinstance(value, bool) and bool not in kinds) or not isinstance(value, kinds):
            expected = " or ".join(k.__name__ for k in kinds)
            raise BenchmarkFileError(
                f"{path}:{line}: {what} field {name!r} must be {expected}, "
                f"got {type(value).__name__} {value!r}"
            )


def read_text(path: str | Path) -> tuple[Path, str]:
    """``(path, text)`` of a UTF-8 file, with a clear error when it is missing."""
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such file")
    try:
        return path, path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise ValueError(f"{path}: not UTF-8 text ({err})") from err


def resolve_files(source: str | Path | Sequence[str | Path], pattern: str) -> list[Path]:
    """A directory (its files matching ``pattern``, sorted), one file, or a list of files."""
    if isinstance(source, (str, Path)):
        root = Path(source)
        if root.is_dir():
            paths = sorted(root.glob(pattern))
            if not paths:
                raise ValueError(f"{root}: directory holds no {pattern} files")
            return paths
        if root.exists():
            return [root]
        raise FileNotFoundError(f"{root}: no such file or directory")
    if not isinstance(source, Sequence) or not all(isinstance(p, (str, Path)) for p in source):
        raise TypeError(
            f"source must be a path or a sequence of paths, got {type(source).__name__}"
        )
    return [Path(p) for p in source]
