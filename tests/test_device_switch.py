"""The GPU test mode switch (``VLP_TEST_DEVICE=cuda``) and the modules that ignore it.

The switch is for kernel, loss and module tests: the test modules that import
``vlp.kernels``, ``vlp.losses``, ``vlp.heads`` or ``vlp.models``. Such a module honours it
when it builds its tensors on ``tests._device.DEVICE`` (it imports ``tests._device``) or
takes the ``device`` fixture. ``NOT_YET`` lists exactly those that still build CPU tensors
only: a module that starts to honour the switch must leave the list, and a new kernel, loss
or module test must honour it or join the list.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

from tests._device import DEVICE, TEST_DEVICE

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent

#: Kernel, loss and module test modules that ignore VLP_TEST_DEVICE (CPU tensors only).
NOT_YET = {
    "test_compile",
    "test_custom_ops", "test_deprecated_paths",
    "test_distributed_faults", "test_example_train_clip",
    "test_fsc_clip_losses", "test_fsdp_grad_cache_distributed", "test_hub",
    "test_kernels_dispatch", "test_naming", "test_reliability_inputs",
    "test_resume", "test_ssmke_distillation", "test_ssmke_model",
}  # fmt: skip


_SCOPE = ("vlp.kernels", "vlp.losses", "vlp.heads", "vlp.models")


def in_scope(path: Path) -> bool:
    """Whether a test module tests kernels, losses or modules (imports one of ``_SCOPE``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        elif isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        if any(n == s or n.startswith(s + ".") for n in names for s in _SCOPE):
            return True
    return False


def honours_switch(path: Path) -> bool:
    """Whether a test module imports ``tests._device`` or takes the ``device`` fixture."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module == "tests._device":
            return True
        if isinstance(node, ast.Import) and any(a.name == "tests._device" for a in node.names):
            return True
        is_test = isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and (
            node.name.startswith("test")
        )
        if is_test and any(a.arg == "device" for a in node.args.args):
            return True
    return False


def test_not_yet_lists_exactly_the_modules_that_ignore_the_switch() -> None:
    modules = {p.stem: p for p in TESTS.glob("test_*.py") if in_scope(p)}
    stale = sorted(NOT_YET - modules.keys())
    assert not stale, (
        f"NOT_YET names modules that do not exist or test no kernel/loss/module: {stale}"
    )
    ignoring = {name for name, path in modules.items() if not honours_switch(path)}
    converted = sorted(NOT_YET - ignoring)
    assert not converted, (
        f"these modules honour VLP_TEST_DEVICE now; drop them from NOT_YET: {converted}"
    )
    new = sorted(ignoring - NOT_YET)
    assert not new, (
        f"these test modules ignore VLP_TEST_DEVICE: build tensors on tests._device.DEVICE "
        f"(or take the device fixture), or add them to NOT_YET in {Path(__file__).name}: {new}"
    )
    # The kernel tests are the ones gpu_check.sh runs on CUDA.
    kernels = {n for n in modules if n.startswith("test_kernels_")} - {"test_kernels_dispatch"}
    assert kernels and not kernels & NOT_YET


def test_default_device_is_the_cpu_with_the_interpreter(device) -> None:
    if "VLP_TEST_DEVICE" in os.environ or "VLP_TEST_COMPILED" in os.environ:
        return  # an explicit choice; the subprocess test below covers the default
    assert TEST_DEVICE == "cpu" and device == DEVICE == __import__("torch").device("cpu")
    assert os.environ.get("TRITON_INTERPRET") == "1"


def _pytest(env_extra: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VLP_TEST", "TRITON_"))}
    env.update(env_extra)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip


def test_cuda_switch_without_a_gpu_is_a_clear_error_not_a_silent_cpu_run() -> None:
    import torch

    if torch.cuda.is_available():
        return  # the GPU run itself (gpu_check.sh) exercises the switch there
    out = _pytest({"VLP_TEST_DEVICE": "cuda"}, "tests/test_kernels_work.py")
    assert out.returncode != 0
    assert "VLP_TEST_DEVICE=cuda was set but torch sees no CUDA device" in out.stdout + out.stderr
    env = {**os.environ, "VLP_TEST_DEVICE": "tpu", "PYTHONPATH": str(ROOT)}
    bad = subprocess.run(
        [sys.executable, "-c", "import tests._device"], cwd=ROOT, env=env,
        capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert bad.returncode != 0
    assert "VLP_TEST_DEVICE must be 'cpu' or 'cuda', got 'tpu'" in bad.stdout + bad.stderr
