"""The one dispatch rule for ops with a fused Triton path (see DESIGN.md).

``backend="auto"`` picks Triton when every tensor is on CUDA and Triton imports,
else the torch reference. ``backend="torch"`` always takes the reference.
``backend="triton"`` takes the kernel and fails loudly when it cannot run: Triton
missing, or CPU tensors without the interpreter (``TRITON_INTERPRET=1``).

The environment variable ``VLP_BACKEND`` (``auto``/``torch``/``triton``) replaces
the default ``"auto"``; an explicit per-call ``"torch"`` or ``"triton"`` always wins.
"""

from __future__ import annotations

import contextlib
import functools
import importlib
import os
from types import ModuleType
from typing import Literal, get_args

import torch

Backend = Literal["auto", "torch", "triton"]
ResolvedBackend = Literal["torch", "triton"]

_BACKENDS: tuple[str, ...] = get_args(Backend)
ENV_VAR = "VLP_BACKEND"

__all__ = [
    "ENV_VAR",
    "Backend",
    "ResolvedBackend",
    "TritonUnavailableError",
    "import_triton",
    "interpreter_active",
    "no_autocast",
    "resolve_backend",
    "triton_available",
    "triton_interpret_upcast",
]


class TritonUnavailableError(RuntimeError):
    """Raised when ``backend="triton"`` is requested but Triton cannot run."""


@functools.lru_cache(maxsize=1)
def _try_import_triton() -> ModuleType | None:
    try:
        return importlib.import_module("triton")
    except Exception:  # ImportError, or a broken install raising at import time
        return None


def triton_available() -> bool:
    """Whether the ``triton`` package imports (a GPU is not required)."""
    return _try_import_triton() is not None


def import_triton() -> ModuleType:
    """Import and return ``triton``, or raise :class:`TritonUnavailableError`."""
    module = _try_import_triton()
    if module is None:
        raise TritonUnavailableError(
            "backend='triton' was requested but the 'triton' package cannot be imported; "
            "install it (pip install 'vlp[triton]') or use backend='torch'"
        )
    return module


def interpreter_active() -> bool:
    """Whether ``TRITON_INTERPRET=1`` is set (kernels then run on CPU tensors).

    Triton reads the variable when a kernel is decorated, so it must be set before
    any kernel module is imported; the test suite's ``conftest.py`` does that.
    """
    return os.environ.get("TRITON_INTERPRET", "0") not in ("", "0")


def _check_backend(name: str, value: str) -> None:
    if value not in _BACKENDS:
        raise ValueError(f"{name} must be one of {_BACKENDS}, got {value!r}")


def resolve_backend(
    backend: str,
    *tensors: torch.Tensor,
    op: str = "this op",
    triton_supported: bool = True,
) -> ResolvedBackend:
    """Resolve ``backend`` to ``"torch"`` or ``"triton"`` for the given tensors.

    Args:
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.
        *tensors: the op's tensor inputs; their device decides ``"auto"``.
        op: name of the op, used in error messages.
        triton_supported: ``False`` for an op whose fused path does not exist
            (yet): ``"auto"`` then resolves to torch and ``"triton"`` raises.

    Returns:
        ``"torch"`` or ``"triton"``.

    Raises:
        ValueError: unknown backend name, or ``"triton"`` on CPU tensors without
            the interpreter.
        NotImplementedError: ``"triton"`` for an op without a fused path.
        TritonUnavailableError: ``"triton"`` when Triton does not import.
    """
    _check_backend("backend", backend)
    if backend == "auto":
        env = os.environ.get(ENV_VAR, "auto").strip().lower() or "auto"
        _check_backend(f"environment variable {ENV_VAR}", env)
        backend = env
    if backend == "torch":
        return "torch"
    if backend == "auto":
        on_cuda = bool(tensors) and all(t.is_cuda for t in tensors)
        if triton_supported and on_cuda and triton_available():
            return "triton"
        return "torch"
    # Explicit triton.
    if not triton_supported:
        raise NotImplementedError(f"{op} has no Triton path; use backend='torch' or 'auto'")
    if not torch.compiler.is_compiling():  # the import is not traced (the eager call checked)
        import_triton()
    if not all(t.is_cuda for t in tensors) and not interpreter_active():
        devices = sorted({str(t.device) for t in tensors})
        raise ValueError(
            f"backend='triton' for {op} needs CUDA tensors (got {devices}); on CPU it runs "
            "only under the Triton interpreter (set TRITON_INTERPRET=1 before importing vlp "
            "kernels)"
        )
    return "triton"


def triton_interpret_upcast(dtype: torch.dtype) -> bool:
    """Whether a kernel must upcast loads of ``dtype`` to fp32 (bf16 under the interpreter).

    The interpreter computes bf16 arithmetic on raw bits; kernels take this value as a
    ``tl.constexpr`` and call ``.to(tl.float32)`` after each load when it is true.
    """
    return dtype == torch.bfloat16 and interpreter_active()


def no_autocast(device: torch.device) -> contextlib.AbstractContextManager[object]:
    """A context in which autocast is off for ``device``'s type (a no-op where it has none).

    The fused ops choose their own accumulation dtypes; autocast would turn their
    internal fp32 products into bf16/fp16 ones and mix dtypes in their reductions.
    """
    if not torch.amp.is_autocast_available(device.type):
        return contextlib.nullcontext()
    return torch.autocast(device.type, enabled=False)
