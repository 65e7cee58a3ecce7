"""torch.compile(fullgraph=True) of every public loss, the heads and the masking (issue 14).

Each case is compiled with ``fullgraph=True`` (any graph break is an error) and must give
the eager values and gradients. ``torch._dynamo.explain`` must report zero graph breaks.
Most cases use the ``aot_eager`` backend (dynamo + AOTAutograd, what inductor sees,
without inductor's code generation, which takes seconds per graph on the CI's two cores);
a few representative cases also run through inductor.

Random ops draw from the global generator here (seeded identically for the eager and the
compiled call). Cases that take a ``torch.Generator`` are in ``test_generator_*`` below.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

import pytest
import torch
import torch._dynamo
from torch import nn
from torch.utils._pytree import tree_leaves

from tests.adapters_models import images_for, make_clip, make_timm
from vlp.adapters import MaskedImageEncoder
from vlp.heads import COSMOSHead, CrossAttentionPooler
from vlp.losses import (
    ClipLoss,
    ContrastiveDistillationLoss,
    COSMOSLoss,
    FSCCLIPLoss,
    SigLipLoss,
    clip_loss,
    contrastive_distillation_loss,
    cosmos_distillation_loss,
    feature_distillation_loss,
    fsc_clip_loss,
    hard_negative_loss,
    local_hard_negative_loss,
    multiview_clip_loss,
    negclip_loss,
    scr_loss,
    siglip_loss,
    ssmke_loss,
)
from vlp.masking import ClusterMasking, gather_tokens, patch_dropout, select_kept_tokens
from vlp.testing import assert_close

B, D, T, P, NEG = 6, 16, 5, 7, 3


def _g() -> torch.Generator:
    return torch.Generator().manual_seed(0)


def _randn(*shape: int, g: torch.Generator) -> torch.Tensor:
    return torch.randn(*shape, generator=g)


def _negative_mask(g: torch.Generator) -> torch.Tensor:
    mask = torch.rand(B, NEG, generator=g) > 0.4
    mask[0] = True
    mask[1] = False
    return mask


def _token_mask(g: torch.Generator, *shape: int) -> torch.Tensor:
    mask = torch.rand(*shape, generator=g) > 0.3
    mask[..., 0] = True
    return mask


#: A case: ``build() -> (fn, inputs, module or None)``; ``fn(*inputs)`` is compiled and the
#: gradients are taken with respect to the floating inputs and the module's parameters.
Case = Callable[[], tuple[Callable[..., Any], tuple[Any, ...], nn.Module | None]]


def _pair() -> tuple[torch.Tensor, torch.Tensor]:
    g = _g()
    image = _randn(B, D, g=g)
    return image, image + 0.5 * _randn(B, D, g=g)


def case_clip() -> Any:
    return (lambda i, t: clip_loss(i, t, 10.0, label_smoothing=0.1)), _pair(), None


def case_clip_tensor_scale_bias() -> Any:
    scale, bias = torch.tensor(12.0), torch.tensor(-1.0)
    return (lambda i, t, s, b: clip_loss(i, t, s, logit_bias=b)), (*_pair(), scale, bias), None


def case_clip_sample_ids() -> Any:
    ids = torch.tensor([0, 1, 1, 2, 3, 3])
    return (lambda i, t: clip_loss(i, t, 10.0, sample_ids=ids)), _pair(), None


def case_clip_details() -> Any:
    return (lambda i, t: clip_loss(i, t, 10.0, return_details=True)), _pair(), None


def case_clip_chunked() -> Any:
    scale = torch.tensor(10.0)
    return (lambda i, t, s: clip_loss(i, t, s, chunk_size=4)), (*_pair(), scale), None


def case_clip_triton() -> Any:
    # The fused path is the registered op vlp::lse: one opaque node in the graph.
    return (lambda i, t: clip_loss(i, t, 10.0, backend="triton")), _pair(), None


def case_clip_module() -> Any:
    module = ClipLoss()
    return module, _pair(), module


def case_siglip() -> Any:
    return (lambda i, t: siglip_loss(i, t, 10.0, -5.0)), _pair(), None


def case_siglip_chunked() -> Any:
    return (lambda i, t: siglip_loss(i, t, 10.0, -5.0, chunk_size=4)), _pair(), None


def case_siglip_triton() -> Any:
    return (lambda i, t: siglip_loss(i, t, 10.0, -5.0, backend="triton")), _pair(), None


def case_siglip_module() -> Any:
    module = SigLipLoss(chunk_size=4)
    return module, _pair(), module


def _negatives() -> tuple[torch.Tensor, ...]:
    g = _g()
    image, text = _randn(B, D, g=g), _randn(B, D, g=g)
    return image, text, _randn(B, NEG, D, g=g), _negative_mask(g)


def case_negclip() -> Any:
    image, text, negatives, mask = _negatives()
    return (
        (lambda i, t, n, m: negclip_loss(i, t, n, m, 10.0)),
        (image, text, negatives, mask),
        None,
    )


def case_hard_negative() -> Any:
    image, text, negatives, mask = _negatives()
    return (lambda i, t, n: hard_negative_loss(i, t, n, mask, 10.0)), (image, text, negatives), None


def case_scr() -> Any:
    g = _g()
    logits = _randn(B, 1 + NEG, g=g)
    valid = _negative_mask(g)
    return (lambda x: scr_loss(x, valid)), (logits,), None


def _tokens() -> tuple[torch.Tensor, ...]:
    g = _g()
    return (
        _randn(B, P, D, g=g),
        _randn(B, T, D, g=g),
        _token_mask(g, B, T),
        _randn(B, NEG, T, D, g=g),
        _token_mask(g, B, NEG, T),
        _negative_mask(g),
    )


def case_local_hard_negative() -> Any:
    it, tt, tm, nt, ntm, nm = _tokens()
    return (
        (lambda a, b, c: local_hard_negative_loss(a, b, tm, c, ntm, nm, 10.0)),
        (it, tt, nt),
        None,
    )


def case_fsc_clip() -> Any:
    image, text, negatives, mask = _negatives()
    it, tt, tm, nt, ntm, _ = _tokens()

    def fn(*x: torch.Tensor) -> Any:
        return fsc_clip_loss(
            x[0], x[1], x[2], x[6], 10.0, image_tokens=x[3], text_tokens=x[4], text_mask=x[7],
            negative_tokens=x[5], negative_token_mask=x[8], return_details=True,
        )  # fmt: skip

    return fn, (image, text, negatives, it, tt, nt, mask, tm, ntm), None


def case_fsc_clip_module() -> Any:
    image, text, negatives, mask = _negatives()
    module = FSCCLIPLoss(10.0, lambda_local=0.0)
    return (lambda i, t, n: module(i, t, n, mask)), (image, text, negatives), module


def _views(count: int, seed: int) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [_randn(B, D, g=g) for _ in range(count)]


def case_multiview_clip() -> Any:
    views = (*_views(2, 1), *_views(2, 2))
    return (lambda a, b, c, d: multiview_clip_loss([a, b], [c, d], 10.0)), views, None


def case_cosmos_distillation() -> Any:
    views = (*_views(2, 1), *_views(2, 2), *_views(2, 3), *_views(2, 4))

    def fn(*v: torch.Tensor) -> torch.Tensor:
        return cosmos_distillation_loss(v[0:2], v[2:4], v[4:6], v[6:8], 10.0)

    return fn, views, None


def case_cosmos_module() -> Any:
    module = COSMOSLoss()
    views = (*_views(3, 1), *_views(2, 2), *_views(3, 3), *_views(2, 4), *_views(3, 5))
    teacher_text = _views(2, 6)

    def fn(*v: torch.Tensor) -> Any:
        return module(v[0:3], v[3:5], v[5:8], v[8:10], v[10:13], teacher_text)

    return fn, views, module


def case_contrastive_distillation() -> Any:
    g = _g()
    image, text, teacher = (_randn(B, D, g=g) for _ in range(3))
    bank = torch.nn.functional.normalize(_randn(4, D, g=g), dim=-1)
    return (
        (lambda i, t, te: contrastive_distillation_loss(i, t, te, bank, 10.0)),
        (image, text, teacher),
        None,
    )


def case_contrastive_distillation_module() -> Any:
    module = ContrastiveDistillationLoss(8, D, learnable_scale=True, generator=_g())
    g = _g()
    return module, tuple(_randn(B, D, g=g) for _ in range(3)), module


def case_feature_distillation() -> Any:
    g = _g()

    def fn(s: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return sum(  # type: ignore[return-value]
            feature_distillation_loss(s, t, kind)  # type: ignore[arg-type]
            for kind in ("cosine", "smooth_l1", "mse")
        )

    return fn, (_randn(B, T, D, g=g), _randn(B, T, D, g=g)), None


def case_ssmke() -> Any:
    g = _g()
    image = (_randn(B, 4 * D, g=g), _randn(B, D, g=g), _randn(B, D, g=g))
    text = (_randn(B, 4 * D, g=g), _randn(B, D, g=g), _randn(B, D, g=g))
    teacher = _randn(B, D, g=g)

    def fn(*x: torch.Tensor) -> Any:
        return ssmke_loss(x[0:3], x[3:6], teacher, None, 14.0, 10.0, 10.0)

    return fn, (*image, *text), None


def case_pooler() -> Any:
    g = _g()
    module = CrossAttentionPooler(D, 2, kdim=8)
    pad = torch.zeros(B, P, dtype=torch.bool)
    pad[:, -2:] = True
    return module, (_randn(B, 3, D, g=g), _randn(B, P, 8, g=g), pad), module


def case_pooler_triton() -> Any:
    g = _g()
    module = CrossAttentionPooler(D, 2)
    return (
        (lambda q, x: module(q, x, backend="triton")),
        (_randn(B, 3, D, g=g), _randn(B, P, D, g=g)),
        module,
    )


def case_cosmos_head() -> Any:
    g = _g()
    module = COSMOSHead(D, image_token_dim=8, text_token_dim=12, num_heads=2)
    inputs = (
        _randn(B, 3, D, g=g),
        _randn(B, 2, D, g=g),
        _randn(B, P, 8, g=g),
        _randn(B, T, 12, g=g),
    )
    return module, inputs, module


def _cluster_images() -> torch.Tensor:
    return _randn(4, 3, 32, 32, g=_g())


def case_cluster_masking_calibrated() -> Any:
    module = ClusterMasking(8, anchor_fraction=0.2)
    images = _cluster_images()
    module(images)  # the calibration step (one host sync) runs eagerly
    return module, (images,), None


def case_cluster_masking_fixed() -> Any:
    module = ClusterMasking(8, anchor_fraction=0.2, threshold=0.3, backend="torch")
    return module, (_cluster_images(),), None


def case_cluster_masking_triton() -> Any:
    module = ClusterMasking(8, anchor_fraction=0.2, threshold=0.3, backend="triton")
    return module, (_cluster_images(),), None


def case_patch_dropout() -> Any:
    return (lambda: patch_dropout(3, 16, 0.5)), (), None


def case_select_kept_tokens() -> Any:
    masked = torch.rand(4, 16, generator=_g()) > 0.5
    return (lambda m: select_kept_tokens(m, min_ratio=0.25)), (masked,), None


def case_gather_tokens() -> Any:
    tokens = _randn(3, 17, D, g=_g())
    keep = patch_dropout(3, 16, 0.5, generator=_g())
    return (lambda x: gather_tokens(x, keep, num_prefix_tokens=1)), (tokens,), None


def case_masked_encoder_open_clip() -> Any:
    model = make_clip("avg")
    module = MaskedImageEncoder(model.visual, ClusterMasking(8, anchor_fraction=0.2, threshold=0.3))
    return module, (images_for(model),), module


def case_masked_encoder_timm() -> Any:
    vit = make_timm(global_pool="avg")
    module = MaskedImageEncoder(vit, lambda x: (patch_dropout(x.shape[0], 16, 0.5), None))
    module.train()
    return module, (images_for(make_clip("avg")),), module


CASES: dict[str, Case] = {
    name.removeprefix("case_"): fn
    for name, fn in dict(globals()).items()
    if name.startswith("case_")
}

#: Representative cases that also compile through inductor: 20-85 s each on two busy cores
#: (C++ code generation), hence marked slow.
INDUCTOR = ["clip", "siglip_chunked", "pooler", "cluster_masking_fixed"]

#: Cases whose ``torch._dynamo.explain`` report is checked (benchmarks/compile_report.py
#: reports it for every case).
EXPLAIN = [
    "clip_chunked",
    "siglip",
    "fsc_clip",
    "cluster_masking_calibrated",
    "masked_encoder_timm",
]


def _floating(x: Any) -> bool:
    return isinstance(x, torch.Tensor) and x.is_floating_point()


def _run(fn: Callable[..., Any], inputs: tuple[Any, ...], module: nn.Module | None) -> list[Any]:
    leaves = [x.detach().clone().requires_grad_() if _floating(x) else x for x in inputs]
    wrt = [x for x in leaves if _floating(x)]
    if module is not None:
        wrt += [p for p in module.parameters() if p.requires_grad]
    torch.manual_seed(1234)
    out = fn(*leaves)
    values = [x.detach() if isinstance(x, torch.Tensor) else x for x in tree_leaves(out)]
    differentiable = [x for x in tree_leaves(out) if _floating(x) and x.requires_grad]
    grads: list[Any] = []
    if differentiable and wrt:
        total = sum((k + 1) * x.float().sum() for k, x in enumerate(differentiable))
        grads = list(torch.autograd.grad(total, wrt, allow_unused=True))
    return values + grads


def _stateful(fn: Callable[..., Any], module: nn.Module | None) -> list[nn.Module]:
    return [m for m in (fn, module) if isinstance(m, nn.Module)]


def _check(name: str, backend: str) -> None:
    fn, inputs, module = CASES[name]()
    torch._dynamo.reset()
    compiled = torch.compile(fn, fullgraph=True, backend=backend)
    # Buffers a forward updates (a memory bank, a threshold) start equal in both runs.
    states = [copy.deepcopy(m.state_dict()) for m in _stateful(fn, module)]
    want = _run(fn, inputs, module)
    for m, state in zip(_stateful(fn, module), states):
        m.load_state_dict(state)
    got = _run(compiled, inputs, module)
    # A training step calls it again on new tensors (and updated buffers): no recompile.
    with torch._dynamo.config.patch(error_on_recompile=True):
        _run(compiled, inputs, module)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        if w is None:
            assert g is None
        elif isinstance(w, torch.Tensor) and w.is_floating_point():
            assert_close(g, w, rtol=1e-5, atol=1e-6)
        elif isinstance(w, torch.Tensor):
            assert torch.equal(g, w)
        else:
            assert g == w


@pytest.mark.parametrize("name", sorted(CASES))
def test_fullgraph_aot_eager(name: str) -> None:
    _check(name, "aot_eager")


@pytest.mark.parametrize("name", EXPLAIN)
def test_explain_reports_no_graph_break(name: str) -> None:
    # fullgraph=True above already fails on any break; this is the count users look at.
    fn, inputs, _ = CASES[name]()
    torch._dynamo.reset()
    explained = torch._dynamo.explain(fn)(*inputs)
    assert explained.graph_break_count == 0, [str(r.reason) for r in explained.break_reasons]
    assert explained.graph_count == 1


@pytest.mark.slow
@pytest.mark.parametrize("name", INDUCTOR)
def test_fullgraph_inductor(name: str) -> None:
    with torch._inductor.config.patch(fallback_random=True):
        _check(name, "inductor")


META = ["clip", "clip_chunked", "siglip_chunked", "negclip", "fsc_clip", "pooler", "cosmos_head"]


@pytest.mark.parametrize("name", META)
def test_meta_device_shapes(name: str) -> None:
    # Shape propagation without data: every value check is skipped on meta tensors.
    fn, inputs, module = CASES[name]()
    want = tree_leaves(fn(*inputs))
    if module is not None:
        module.to("meta")
    meta = [x.to("meta") if isinstance(x, torch.Tensor) else x for x in inputs]
    got = tree_leaves(fn(*meta))
    assert [tuple(x.shape) for x in got] == [tuple(x.shape) for x in want]
    assert [x.dtype for x in got] == [x.dtype for x in want]
    assert all(x.device.type == "meta" for x in got)
