import pytest
import torch

from vlp import kernels
from vlp.kernels import TritonUnavailableError, resolve_backend


def test_torch_always_torch():
    assert resolve_backend("torch", torch.zeros(2)) == "torch"


def test_auto_on_cpu_is_torch(monkeypatch):
    monkeypatch.delenv("VLP_BACKEND", raising=False)
    assert resolve_backend("auto", torch.zeros(2)) == "torch"
    assert resolve_backend("auto") == "torch"


def test_unknown_backend_names_the_argument():
    with pytest.raises(ValueError, match=r"backend must be one of .* got 'cuda'"):
        resolve_backend("cuda", torch.zeros(2))


def test_env_override_replaces_auto_only(monkeypatch):
    monkeypatch.setenv("VLP_BACKEND", "torch")
    assert resolve_backend("auto", torch.zeros(2)) == "torch"
    monkeypatch.setenv("VLP_BACKEND", "bogus")
    with pytest.raises(ValueError, match="VLP_BACKEND"):
        resolve_backend("auto", torch.zeros(2))
    # An explicit per-call choice wins over the environment.
    assert resolve_backend("torch", torch.zeros(2)) == "torch"


def test_env_triton_under_interpreter(monkeypatch):
    monkeypatch.setenv("VLP_BACKEND", "triton")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    if not kernels.triton_available():
        pytest.skip("triton not installed")
    assert resolve_backend("auto", torch.zeros(2)) == "triton"


def test_explicit_triton_on_cpu_needs_interpreter(monkeypatch):
    if not kernels.triton_available():
        pytest.skip("triton not installed")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    with pytest.raises(ValueError, match="TRITON_INTERPRET=1"):
        resolve_backend("triton", torch.zeros(2), op="my_op")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert resolve_backend("triton", torch.zeros(2)) == "triton"


def test_triton_missing_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(kernels._dispatch, "_try_import_triton", lambda: None)
    assert not kernels.triton_available()
    with pytest.raises(TritonUnavailableError, match="cannot be imported"):
        resolve_backend("triton", torch.zeros(2))
    # auto silently falls back to the reference.
    assert resolve_backend("auto", torch.zeros(2)) == "torch"


def test_op_without_triton_path():
    with pytest.raises(NotImplementedError, match="pooler has no Triton path"):
        resolve_backend("triton", torch.zeros(2), op="pooler", triton_supported=False)
    assert resolve_backend("auto", torch.zeros(2), triton_supported=False) == "torch"


def test_importing_vlp_does_not_import_triton():
    import subprocess
    import sys

    code = "import sys, vlp, vlp.kernels; print('triton' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_upcast_flag(monkeypatch):
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kernels.triton_interpret_upcast(torch.bfloat16)
    assert not kernels.triton_interpret_upcast(torch.float16)
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not kernels.triton_interpret_upcast(torch.bfloat16)
