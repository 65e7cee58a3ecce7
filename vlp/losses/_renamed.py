"""Deprecated keyword names of the losses, kept for one release.

``@renamed_keywords(old="new")`` lets a function (or ``__init__``) accept a keyword under
its old name: the call warns with a :class:`DeprecationWarning` naming the new keyword and
goes on with the value under the new name. ``(new, convert)`` maps a value whose meaning
was inverted (``gather_teacher=True`` is ``local_targets=False``).
"""

from __future__ import annotations

import functools
import inspect
import warnings
from collections.abc import Callable
from typing import Any, TypeVar

from vlp._deprecated import REMOVAL

__all__ = ["renamed_keywords"]

_F = TypeVar("_F", bound=Callable[..., Any])


def renamed_keywords(**renames: str | tuple[str, Callable[[Any], Any]]) -> Callable[[_F], _F]:
    """Decorate a callable so that each old keyword still works, with a warning.

    Args:
        **renames: ``old=new`` or ``old=(new, convert)``.

    Returns:
        The decorator. Passing both the old and the new keyword raises ``TypeError``.
    """

    def decorate(function: _F) -> _F:
        where = function.__qualname__.removesuffix(".__init__")
        order = list(inspect.signature(function).parameters)

        @functools.wraps(function)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            for old, target in renames.items():
                if old not in kwargs:
                    continue
                new, convert = (target, None) if isinstance(target, str) else target
                if new in kwargs or new in order[: len(args)]:
                    raise TypeError(f"{where}() got both {old}= (deprecated) and {new}=")
                value = kwargs.pop(old)
                kwargs[new] = value if convert is None else convert(value)
                hint = f"{new}=" if convert is None else f"{new}= (the opposite: not {old})"
                warnings.warn(
                    f"{where}({old}=) is deprecated and will be removed in vlp {REMOVAL}; "
                    f"use {hint} instead",
                    DeprecationWarning,
                    stacklevel=2,
                )
            return function(*args, **kwargs)

        wrapper.__vlp_renames__ = renames  # type: ignore[attr-defined]  # read by vlp._hub

        return wrapper  # type: ignore[return-value]

    return decorate
