"""One vocabulary: the naming table of docs/naming.md against the signatures, and its rules.

Reads the "Signatures" table of ``docs/naming.md`` and checks every row against
``inspect.signature`` (so that the page cannot drift), checks that the table lists every loss
of ``vlp.losses``, walks the ``__all__`` of the public subpackages for the rules that hold
everywhere, calls every loss to check that it returns a tensor by default and a NamedTuple
with ``return_details=True``, and checks each deprecated keyword.
"""

from __future__ import annotations

import importlib
import inspect
import re
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import vlp.losses as losses

F64 = torch.float64
PAGE = Path(__file__).resolve().parent.parent / "docs" / "naming.md"
SUBPACKAGES = (
    "vlp.losses",
    "vlp.heads",
    "vlp.masking",
    "vlp.augment",
    "vlp.negatives",
    "vlp.eval",
    "vlp.adapters",
    "vlp.models",
    "vlp.kernels",
)
DISTRIBUTED = ("local_loss", "gather_with_grad", "group")
TILED = ("chunk_size", "backend")


def _table(title: str) -> list[list[str]]:
    """The body rows of the first markdown table after the ``## title`` heading."""
    section = PAGE.read_text().split(f"## {title}\n", 1)[1]
    lines = section.splitlines()
    first = next(i for i, line in enumerate(lines) if line.startswith("|"))
    rows = []
    for line in lines[first + 2 :]:  # after the header and its rule
        if not line.startswith("|"):
            break
        rows.append([c.strip().replace("`", "") for c in line.strip().strip("|").split("|")])
    return rows


SIGNATURES = {row[0]: row[1:] for row in _table("Signatures")}


def _is_module(name: str) -> bool:
    return isinstance(getattr(losses, name), type)


def _params(name: str) -> dict[str, inspect.Parameter]:
    """Keywords of a function, or of a module's constructor and forward together."""
    obj = getattr(losses, name)
    if not _is_module(name):
        return dict(inspect.signature(obj).parameters)
    return {
        **inspect.signature(obj.__init__).parameters,
        **inspect.signature(obj.forward).parameters,
    }


def _positional(name: str) -> list[str]:
    obj = getattr(losses, name)
    target = obj.forward if _is_module(name) else obj
    return [
        p.name
        for p in inspect.signature(target).parameters.values()
        if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD) and p.name != "self"
    ]


def test_the_table_lists_every_loss() -> None:
    listed = set(SIGNATURES)
    every = {
        n for n in losses.__all__ if n.endswith("_loss") or (n.endswith("Loss") and _is_module(n))
    }
    assert listed == every, f"missing: {sorted(every - listed)}, unknown: {sorted(listed - every)}"


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_signature_matches_the_table(name: str) -> None:
    arguments, distributed, tiled, details = SIGNATURES[name]
    assert _positional(name) == [a.strip() for a in arguments.split(",")], name
    params = _params(name)
    assert all(k in params for k in DISTRIBUTED) == (distributed == "yes"), name
    assert all(k in params for k in TILED) == (tiled == "yes"), name
    has_details = "return_details" in params
    assert has_details == (details == "yes"), name
    if has_details:
        assert params["return_details"].default is False, name
    if _is_module(name) and tiled == "yes":
        # On the module, the tiled path is configuration: the constructor takes it.
        init = inspect.signature(getattr(losses, name).__init__).parameters
        assert all(k in init for k in TILED), name


def _public_callables() -> list[tuple[str, Callable[..., Any]]]:
    out: list[tuple[str, Callable[..., Any]]] = []
    for package in SUBPACKAGES:
        module = importlib.import_module(package)
        for name in getattr(module, "__all__", ()):
            obj = getattr(module, name)
            if isinstance(obj, type) and issubclass(obj, nn.Module):
                out.append((f"{package}.{name}.__init__", obj.__init__))
                out.append((f"{package}.{name}.forward", obj.forward))
            elif inspect.isfunction(obj):
                out.append((f"{package}.{name}", obj))
    return out


CALLABLES = _public_callables()
ORDER = ("negative_features", "negative_mask", "logit_scale", "logit_bias")


@pytest.mark.parametrize(("name", "fn"), CALLABLES, ids=[n for n, _ in CALLABLES])
def test_rules_hold_for_every_public_callable(name: str, fn: Callable[..., Any]) -> None:
    names = list(inspect.signature(fn).parameters)
    # Features first, then negative_features, negative_mask, then logit_scale, logit_bias.
    present = [n for n in ORDER if n in names]
    assert present == sorted(present, key=names.index), f"{name}: order of {present}"
    if "logit_scale" in names:
        features = [n for n in names if n.endswith("_features")]
        assert all(names.index(f) < names.index("logit_scale") for f in features), name
    # Every distributed loss: local_loss, gather_with_grad and group together.
    if "group" in names and name.startswith("vlp.losses"):
        assert "local_loss" in names and "gather_with_grad" in names, name
    # A tiled path comes with the backend rule.
    if "chunk_size" in names and name.startswith("vlp.losses"):
        assert "backend" in names, name
    # Modules configure the backend in the constructor (a forward override may stay).
    if name.endswith(".forward") and "backend" in names:
        owner = name.rsplit(".", 1)[0]
        init = dict(CALLABLES)[f"{owner}.__init__"]
        assert "backend" in inspect.signature(init).parameters, name
    # One name per concept.
    for old in ("valid", "learnable", "gather_teacher", "kd_scale", "init"):
        if old == "init" and name.startswith("vlp.losses.TeacherMemoryBank"):
            continue  # the bank's initial contents, not a scale
        assert old not in names, f"{name} takes {old!r}"


# --------------------------------------------------------------------- what losses return


def _features(n: int = 4, d: int = 6, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(n, d, generator=g, dtype=F64) for _ in range(4)]


def _hard_negative_inputs() -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(1)
    image, text = (torch.randn(4, 6, generator=g, dtype=F64) for _ in range(2))
    negatives = torch.randn(4, 2, 6, generator=g, dtype=F64)
    mask = torch.tensor([[True, False], [True, True], [False, True], [True, True]])
    return image, text, negatives, mask


def _local_inputs() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(2)
    return {
        "image_tokens": torch.randn(4, 3, 6, generator=g, dtype=F64),
        "text_tokens": torch.randn(4, 5, 6, generator=g, dtype=F64),
        "text_mask": torch.ones(4, 5, dtype=torch.bool),
        "negative_tokens": torch.randn(4, 2, 5, 6, generator=g, dtype=F64),
        "negative_token_mask": torch.ones(4, 2, 5, dtype=torch.bool),
    }


def _calls() -> dict[str, Callable[..., Any]]:
    a, b, c, d = _features()
    image, text, negatives, mask = _hard_negative_inputs()
    tokens = _local_inputs()
    bank = F.normalize(torch.randn(3, 6, dtype=F64), dim=-1)
    triple = (torch.randn(4, 8, dtype=F64), a, b)
    views = ([a, b], [c])
    return {
        "clip_loss": lambda **kw: losses.clip_loss(a, b, 5.0, **kw),
        "siglip_loss": lambda **kw: losses.siglip_loss(a, b, 5.0, -1.0, **kw),
        "multiview_clip_loss": lambda **kw: losses.multiview_clip_loss(*views, 5.0, **kw),
        "cosmos_distillation_loss": lambda **kw: losses.cosmos_distillation_loss(
            [a], [b], [c], [d], 5.0, **kw
        ),
        "negclip_loss": lambda **kw: losses.negclip_loss(image, text, negatives, mask, 5.0, **kw),
        "hard_negative_loss": lambda **kw: losses.hard_negative_loss(
            image, text, negatives, mask, 5.0, **kw
        ),
        "local_hard_negative_loss": lambda **kw: losses.local_hard_negative_loss(
            *tokens.values(), mask, 5.0, **kw
        ),
        "scr_loss": lambda **kw: losses.scr_loss(torch.randn(4, 3, dtype=F64), mask, **kw),
        "fsc_clip_loss": lambda **kw: losses.fsc_clip_loss(
            image, text, negatives, mask, 5.0, **tokens, **kw
        ),
        "contrastive_distillation_loss": lambda **kw: losses.contrastive_distillation_loss(
            a, b, c, bank, 5.0, **kw
        ),
        "feature_distillation_loss": lambda **kw: losses.feature_distillation_loss(a, b, **kw),
        "ssmke_loss": lambda **kw: losses.ssmke_loss(triple, triple, c, bank, 5.0, 5.0, 5.0, **kw),
        "ClipLoss": lambda **kw: losses.ClipLoss(dtype=F64)(a, b, **kw),
        "SigLipLoss": lambda **kw: losses.SigLipLoss(dtype=F64)(a, b, **kw),
        "COSMOSLoss": lambda **kw: losses.COSMOSLoss(clip_image_views=1, dtype=F64)(
            [a], [b], [c], [d], [a], [b], **kw
        ),
        "FSCCLIPLoss": lambda **kw: losses.FSCCLIPLoss(10.0, dtype=F64)(
            image, text, negatives, mask, **tokens, **kw
        ),
        "ContrastiveDistillationLoss": lambda **kw: losses.ContrastiveDistillationLoss(
            5, 6, bank_init="empty", dtype=F64
        )(a, b, c, **kw),
    }


CALLS = _calls()


def test_every_listed_loss_is_called() -> None:
    assert set(CALLS) == set(SIGNATURES)


@pytest.mark.parametrize("name", sorted(CALLS))
def test_a_tensor_by_default_a_namedtuple_with_details(name: str) -> None:
    out = CALLS[name]()
    assert isinstance(out, torch.Tensor) and out.dim() == 0, name
    assert torch.isfinite(out)
    if SIGNATURES[name][3] == "yes":
        details = CALLS[name](return_details=True)
        assert isinstance(details, tuple) and hasattr(details, "_fields"), name
        assert details[0].item() == pytest.approx(out.item(), rel=1e-12), name


# ---------------------------------------------------------------------- deprecated names


def _warns(new: str, call: Callable[[], Any]) -> Any:
    with pytest.warns(DeprecationWarning, match=re.escape(new)):
        return call()


def test_deprecated_keywords_warn_and_mean_the_same() -> None:
    a, b, c, _ = _features()
    image, text, negatives, mask = _hard_negative_inputs()
    bank = F.normalize(torch.randn(3, 6, dtype=F64), dim=-1)
    triple = (torch.randn(4, 8, dtype=F64), a, b)

    old = _warns("init_scale=", lambda: losses.LogitScale(init=20.0))
    assert old().item() == pytest.approx(20.0)
    frozen = _warns("learnable_scale=", lambda: losses.LogitScale(learnable=False))
    assert not frozen.log_scale.requires_grad
    siglip = _warns("learnable_scale=", lambda: losses.SigLipLoss(learnable=False))
    assert not siglip.logit_bias.requires_grad
    module = _warns("bank_init=", lambda: losses.ContrastiveDistillationLoss(5, 6, init="empty"))
    assert len(module.bank) == 0

    logits = torch.randn(4, 3, dtype=F64)
    want = losses.scr_loss(logits, mask)
    assert torch.equal(_warns("negative_mask=", lambda: losses.scr_loss(logits, valid=mask)), want)

    fsc = losses.fsc_clip_loss(
        image, text, negatives, mask, 5.0, lambda_local=0.0, scr_label_smoothing=0.1
    )
    fsc_old = _warns(
        "scr_label_smoothing=",
        lambda: losses.fsc_clip_loss(
            image, text, negatives, mask, 5.0, lambda_local=0.0, label_smoothing=0.1
        ),
    )
    assert torch.equal(fsc_old, fsc)
    fsc_module = _warns(
        "scr_label_smoothing=", lambda: losses.FSCCLIPLoss(10.0, label_smoothing=0.1)
    )
    assert fsc_module.scr_label_smoothing == 0.1

    kd = losses.contrastive_distillation_loss(a, b, c, bank, 5.0, local_targets=False)
    kd_old = _warns(
        "local_targets=",
        lambda: losses.contrastive_distillation_loss(a, b, c, bank, 5.0, gather_teacher=True),
    )
    assert torch.equal(kd_old, kd)
    module = _warns(
        "local_targets=", lambda: losses.ContrastiveDistillationLoss(5, 6, gather_teacher=True)
    )
    assert module.local_targets is False

    total = losses.ssmke_loss(triple, triple, c, bank, 5.0, 6.0, 7.0)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        total_old = losses.ssmke_loss(
            triple, triple, c, bank, kd_scale=5.0, itc_scale_intermediate=6.0,
            itc_scale_output=7.0,
        )  # fmt: skip
    assert torch.equal(total_old, total)
    messages = " ".join(str(w.message) for w in caught if w.category is DeprecationWarning)
    for new in ("distill_logit_scale=", "logit_scale_intermediate=", "logit_scale_output="):
        assert new in messages

    with pytest.raises(TypeError, match="got both valid= .deprecated. and negative_mask="):
        losses.scr_loss(logits, mask, valid=mask)  # type: ignore[call-arg]
