"""Lazy package namespaces: a name is imported from its module when it is first used.

A package ``__init__`` lists where each public name lives and gets a module-level
``__getattr__`` (PEP 562) that imports that module on first access and caches the name in
the package, so ``import vlp.data`` costs nothing until a name is used and the heavy
libraries (webdataset, torchvision, PIL, timm, open_clip) load only with the module that
uses them. Type checkers read the same names from an ``if TYPE_CHECKING:`` import block.

Like :mod:`vlp._deprecated`, this module sits at the bottom of the import order.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Mapping
from typing import Any

from vlp._deprecated import deprecated_getattr

__all__ = ["lazy_getattr"]


def lazy_getattr(
    module_name: str,
    names: Mapping[str, str],
    deprecated: Mapping[str, str | tuple[str, str]] | None = None,
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """Build a package's ``__getattr__`` and ``__dir__`` that import names on first use.

    Args:
        module_name: the package (pass ``__name__``).
        names: ``{name: "module.that.defines.it"}``; the attribute of that module with the
            same name is returned and cached in the package.
        deprecated: old names served with a :class:`DeprecationWarning`, in the form
            :func:`vlp._deprecated.deprecated_getattr` takes; never cached, so every
            access warns.

    Returns:
        ``(__getattr__, __dir__)`` to assign in the package.
    """
    table = dict(names)
    old = deprecated_getattr(module_name, deprecated or {})

    def __getattr__(name: str) -> Any:
        home = table.get(name)
        if home is None:
            return old(name)
        value = getattr(importlib.import_module(home), name)
        setattr(sys.modules[module_name], name, value)
        return value

    def __dir__() -> list[str]:
        return sorted(set(vars(sys.modules[module_name])) | set(table))

    return __getattr__, __dir__
