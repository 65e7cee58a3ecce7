"""Deprecated aliases for names and modules that moved: one helper, one warning text.

A module whose names moved keeps them reachable for one release through a module-level
``__getattr__`` built here. Each access of an old name imports its new home, warns with a
:class:`DeprecationWarning` that names the new path, and returns the object itself (so
``isinstance`` checks and identity hold across old and new paths)::

    # vlp/heads/__init__.py
    from vlp._deprecated import deprecated_getattr

    __getattr__ = deprecated_getattr(__name__, {"SSMKE": "vlp.models.ssmke:SSMKE"})

A module that moved as a whole (``vlp.heads.ssmke`` -> ``vlp.models.ssmke``) keeps its old
dotted path through :func:`deprecated_modules`, without a file at the old path (so that
``git`` follows the move): importing the old path gives a stand-in module whose names are
deprecated aliases of the new ones.

This module sits at the bottom of the import order: it imports nothing from ``vlp``.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import importlib.util
import sys
import types
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

__all__ = [
    "REMOVAL",
    "Target",
    "deprecated_getattr",
    "deprecated_modules",
    "moved",
    "warn_deprecated",
]

_OWN_FILES = {__file__, __file__.replace("_deprecated.py", "_lazy.py")}

#: The release in which the deprecated aliases go away.
REMOVAL = "0.3"

#: Where an old name now lives: ``"new.module:name"``, or ``("new.module:name", shown)``
#: where the warning should name something else (a renamed function's new name while the
#: alias returns a shim that still takes the old arguments).
Target = str | tuple[str, str]


def warn_deprecated(old: str, new: str, *, stacklevel: int = 2) -> None:
    """Warn that ``old`` is deprecated in favour of ``new``.

    Args:
        old: the deprecated dotted path, e.g. ``"vlp.heads.SSMKE"``.
        new: its replacement, e.g. ``"vlp.models.SSMKE"``.
        stacklevel: passed on to :func:`warnings.warn` (counted from the caller).
    """
    warnings.warn(
        f"{old} is deprecated and will be removed in vlp {REMOVAL}; use {new} instead",
        DeprecationWarning,
        stacklevel=stacklevel + 1,
    )


def _caller() -> tuple[int, types.FrameType | None]:
    """The first frame outside this module and :mod:`vlp._lazy`, and its stack level.

    The level is the ``stacklevel`` a module ``__getattr__`` passes to
    :func:`warn_deprecated` (the ``__getattr__`` is called directly from the frame that
    reads the attribute, or from :mod:`vlp._lazy`'s).
    """
    frame: types.FrameType | None = sys._getframe(2)
    level = 2
    while frame is not None and frame.f_code.co_filename in _OWN_FILES:
        frame = frame.f_back
        level += 1
    return level, frame


def _split(old: str, target: Target) -> tuple[str, str, str]:
    path, shown = (target, "") if isinstance(target, str) else target
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ValueError(f"the target of {old!r} must be 'module:name', got {path!r}")
    return module_name, attr, shown or f"{module_name}.{attr}"


def moved(names: Iterable[str], module: str, *, public: str | None = None) -> dict[str, Target]:
    """Targets for names that moved unchanged to ``module``.

    Args:
        names: the names.
        module: the module that defines them now.
        public: the package the warning should point users to (e.g. ``"vlp.models"``
            for names defined in ``vlp.models.ssmke``); default ``module``.

    Returns:
        ``{name: ("module:name", "public.name")}``.
    """
    shown = module if public is None else public
    return {name: (f"{module}:{name}", f"{shown}.{name}") for name in names}


def deprecated_getattr(module_name: str, aliases: Mapping[str, Target]) -> Callable[[str], Any]:
    """Build a module ``__getattr__`` that serves deprecated aliases.

    Args:
        module_name: the module that gets the ``__getattr__`` (pass ``__name__``).
        aliases: ``{old_name: target}`` (see :data:`Target`).

    Returns:
        The function to assign to the module's ``__getattr__``; names that are not
        aliases raise :class:`AttributeError`.
    """
    table = {old: _split(old, target) for old, target in aliases.items()}

    def __getattr__(name: str) -> Any:
        entry = table.get(name)
        if entry is None:
            raise AttributeError(f"module {module_name!r} has no attribute {name!r}")
        new_module, attr, shown = entry
        value = getattr(importlib.import_module(new_module), attr)
        level, frame = _caller()
        # ``from package import name`` first probes the name with ``hasattr`` from the
        # import machinery, then reads it: warn once, at the read.
        if frame is None or frame.f_code.co_name != "_handle_fromlist":
            warn_deprecated(f"{module_name}.{name}", shown, stacklevel=level)
        return value

    return __getattr__


class _MovedModuleFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds the registered old module paths and builds their stand-in modules."""

    def __init__(self) -> None:
        self.modules: dict[str, dict[str, Target]] = {}

    def find_spec(
        self,
        fullname: str,
        path: Sequence[str] | None,
        target: types.ModuleType | None = None,
    ) -> importlib.machinery.ModuleSpec | None:
        if fullname not in self.modules:
            return None
        return importlib.util.spec_from_loader(fullname, self)

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> types.ModuleType:
        module = types.ModuleType(spec.name, f"Deprecated: the names of {spec.name} moved.")
        aliases = self.modules[spec.name]
        module.__getattr__ = deprecated_getattr(spec.name, aliases)  # type: ignore[method-assign]
        module.__all__ = sorted(aliases)  # type: ignore[attr-defined]
        return module

    def exec_module(self, module: types.ModuleType) -> None:
        return None


_FINDER = _MovedModuleFinder()


def deprecated_modules(modules: Mapping[str, Mapping[str, Target]]) -> None:
    """Keep old module paths importable, each name a deprecated alias.

    Args:
        modules: ``{old.module.path: {name: target}}``; the old path must not exist as a
            file. Registered once, from the old path's parent package ``__init__``.
    """
    for name, aliases in modules.items():
        for old, target in aliases.items():
            _split(old, target)
        _FINDER.modules[name] = dict(aliases)
    if _FINDER not in sys.meta_path:
        sys.meta_path.append(_FINDER)
