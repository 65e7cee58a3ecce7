"""COSMOS losses: spec section 11.1-11.3 cases, a float64 reference written from the spec's
formulas (not through clip_loss), gradients, the chunked path and bad input.

Honours ``VLP_TEST_DEVICE``: views are drawn on the CPU with a seeded generator and moved to
the test device, and the losses under test are moved there too; with ``cuda`` the
``backend="triton"`` test runs the compiled kernel against a float64 CPU reference through
``assert_kernel_close``. The distributed tests stay on the CPU on purpose (gloo process
groups carry CPU tensors only): ``global_views`` draws CPU views.
"""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tests._device import DEVICE, dev
from vlp.losses import (
    COSMOSLoss,
    COSMOSLossOutput,
    clip_loss,
    cosmos_distillation_loss,
    multiview_clip_loss,
)
from vlp.testing import assert_close, assert_kernel_close, triton_runnable

F64 = torch.float64


# ------------------------------------------------------------------ float64 reference


def pair_loss(a: torch.Tensor, b: torch.Tensor, s: float | torch.Tensor) -> torch.Tensor:
    """Spec 2.1: l_s(A, B) = 1/2 [CE(s A B^T, diag) + CE(s B A^T, diag)], rows normalised."""
    a = a / a.norm(dim=1, keepdim=True)
    b = b / b.norm(dim=1, keepdim=True)
    logits = s * a @ b.T
    diag = logits.diagonal()
    row = (logits.logsumexp(dim=1) - diag).mean()
    col = (logits.logsumexp(dim=0) - diag).mean()
    return (row + col) / 2


def product_mean(xs: list[torch.Tensor], ys: list[torch.Tensor], s: float | torch.Tensor):
    return sum(pair_loss(x, y, s) for x in xs for y in ys) / (len(xs) * len(ys))


def reference_objective(img, txt, img_x, txt_x, t_img, t_txt, s, s_d):
    """Spec 2.2, written out: L_CLIP over g1, g2 x 8 captions; L_COSMOS over 4 groups."""
    l_clip = product_mean(img[:2], txt, s)
    t_img = [t.detach() for t in t_img]
    t_txt = [t.detach() for t in t_txt]
    l_cosmos = (
        product_mean(img_x, t_img, s_d)
        + product_mean(img_x, t_txt, s_d)
        + product_mean(txt_x, t_img, s_d)
        + product_mean(txt_x, t_txt, s_d)
    ) / 4
    return l_clip, l_cosmos


def views(
    n_views: int, n: int, d: int, g: torch.Generator, dtype=F64, device: torch.device = DEVICE
) -> list[torch.Tensor]:
    return [torch.randn(n, d, generator=g, dtype=dtype).to(device) for _ in range(n_views)]


def cosmos_inputs(g: torch.Generator, n: int = 5, d: int = 6):
    return (
        views(8, n, d, g),  # student plain image views g1, g2, l1..l6
        views(8, n, d, g),  # student plain captions G1, G2, L1..L6
        views(8, n, d, g),  # cross-modal image features
        views(8, n, d, g),  # cross-modal text features
        views(2, n, d, g),  # teacher image g1, g2
        views(2, n, d, g),  # teacher text G1, G2
    )


# --------------------------------------------------------------------- spec 11.1


def test_pairwise_closed_forms() -> None:
    eye = torch.eye(2, dtype=F64, device=DEVICE)
    swapped = eye.flip(0)
    t1 = multiview_clip_loss([eye], [eye], 1.0)
    assert float(t1) == pytest.approx(math.log(1 + math.exp(-1)), abs=1e-12)
    assert float(t1) == pytest.approx(0.3132617, abs=1e-7)
    t2 = multiview_clip_loss([eye], [swapped], 1.0)
    assert float(t2) == pytest.approx(1.3132617, abs=1e-7)
    s = 1 / 0.07
    assert float(multiview_clip_loss([eye], [eye], s)) == pytest.approx(6.2487e-07, rel=1e-4)
    eye4 = torch.eye(4, dtype=F64, device=DEVICE)
    t3 = multiview_clip_loss([eye4], [eye4], s)
    assert float(t3) == pytest.approx(math.log1p(3 * math.exp(-s)), rel=1e-9)
    assert float(t3) == pytest.approx(1.8746e-06, rel=1e-4)
    collapsed = torch.ones(4, 3, dtype=F64, device=DEVICE)
    for scale in (0.5, 1 / 0.07, 100.0):
        t4 = multiview_clip_loss([collapsed, collapsed], [collapsed], scale)
        assert float(t4) == pytest.approx(math.log(4), abs=1e-12)
    one = dev(torch.randn(1, 3, dtype=F64))
    assert float(multiview_clip_loss([one], [one.flip(1)], 3.0)) == 0.0


def test_pairwise_symmetry_and_permutation(generator: torch.Generator) -> None:
    a, b = views(2, 6, 5, generator)
    assert_close(multiview_clip_loss([a], [b], 7.0), multiview_clip_loss([b], [a], 7.0))
    perm = dev(torch.randperm(6, generator=generator))
    assert_close(multiview_clip_loss([a], [b], 7.0), multiview_clip_loss([a[perm]], [b[perm]], 7.0))


def test_multiview_matches_reference_and_clip_loss(generator: torch.Generator) -> None:
    xs, ys = views(3, 5, 4, generator), views(2, 5, 4, generator)
    got = multiview_clip_loss(xs, ys, 4.0)
    assert_close(got, product_mean(xs, ys, 4.0), rtol=1e-12, atol=1e-12)
    # A single pair is exactly clip_loss.
    assert torch.equal(multiview_clip_loss(xs[:1], ys[:1], 4.0), clip_loss(xs[0], ys[0], 4.0))


@settings(max_examples=20, deadline=None)
@given(
    n=st.integers(1, 9),
    d=st.integers(1, 6),
    n_a=st.integers(1, 4),
    n_b=st.integers(1, 4),
    scale=st.floats(0.5, 100.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_objective_matches_reference_on_random_cases(n, d, n_a, n_b, scale, seed) -> None:
    g = torch.Generator().manual_seed(seed)
    img_x, txt_x = views(n_a, n, d, g), views(n_b, n, d, g)
    t_img, t_txt = views(n_b, n, d, g), views(n_a, n, d, g)
    got = cosmos_distillation_loss(img_x, txt_x, t_img, t_txt, scale)
    want = (
        product_mean(img_x, t_img, scale)
        + product_mean(img_x, t_txt, scale)
        + product_mean(txt_x, t_img, scale)
        + product_mean(txt_x, t_txt, scale)
    ) / 4
    assert_close(got, want, rtol=1e-10, atol=1e-12)


# ------------------------------------------------------------------ spec 11.2-11.3


def test_collapsed_objective_is_two_log_four() -> None:
    collapsed = torch.ones(4, 3, dtype=F64, device=DEVICE)
    eight, two = [collapsed] * 8, [collapsed] * 2
    loss_fn = COSMOSLoss(dtype=F64, device=DEVICE)
    with torch.no_grad():
        out = loss_fn(eight, eight, eight, eight, two, two, return_details=True)
        plain = loss_fn(eight, eight, eight, eight, two, two)
    assert isinstance(out, COSMOSLossOutput)
    assert isinstance(plain, torch.Tensor) and plain.dim() == 0
    assert float(plain) == float(out.loss)
    assert float(out.clip) == pytest.approx(math.log(4), abs=1e-12)
    assert float(out.distillation) == pytest.approx(math.log(4), abs=1e-12)
    assert float(out.loss) == pytest.approx(2.7725887, abs=1e-7)


def test_objective_matches_float64_reference(generator: torch.Generator) -> None:
    inputs = cosmos_inputs(generator)
    for group in inputs:
        for t in group:
            t.requires_grad_()
    loss_fn = COSMOSLoss(dtype=F64, device=DEVICE)
    with torch.no_grad():
        loss_fn.logit_scale.log_scale.fill_(math.log(9.0))
        loss_fn.distill_logit_scale.log_scale.fill_(math.log(5.0))
    out = loss_fn(*inputs, return_details=True)
    l_clip, l_cosmos = reference_objective(*inputs, 9.0, 5.0)
    assert_close(out.clip, l_clip, rtol=1e-12, atol=1e-12)
    assert_close(out.distillation, l_cosmos, rtol=1e-12, atol=1e-12)
    assert_close(out.loss, l_clip + l_cosmos, rtol=1e-12, atol=1e-12)
    # Gradients of every student input too.
    # (The plain local image views l1..l6 are not in the objective: no gradient.)
    flat = [*inputs[0][:2], *(t for group in inputs[1:4] for t in group)]
    got = torch.autograd.grad(out.loss, flat, retain_graph=True)
    want = torch.autograd.grad(l_clip + l_cosmos, flat)
    for index, (g_got, g_want) in enumerate(zip(got, want)):
        assert_close(g_got, g_want, rtol=1e-10, atol=1e-12, msg=f"input {index}")
    unused = torch.autograd.grad(out.loss, inputs[0][2:], allow_unused=True)
    assert all(g is None for g in unused)
    # The functional form equals the module's term.
    assert_close(cosmos_distillation_loss(*inputs[2:], 5.0), l_cosmos, rtol=1e-12, atol=1e-12)


def test_structure_local_crops_teacher_and_temperatures(generator: torch.Generator) -> None:
    img, txt, img_x, txt_x, t_img, t_txt = cosmos_inputs(generator)
    for t in [*t_img, *t_txt]:
        t.requires_grad_()
    loss_fn = COSMOSLoss(dtype=F64, device=DEVICE)
    out = loss_fn(img, txt, img_x, txt_x, t_img, t_txt, return_details=True)

    # L_CLIP ignores local image crops; L_COSMOS depends on their cross-modal features.
    moved = [*img[:2], *(v + 3.0 for v in img[2:])]
    moved_x = [*img_x[:2], *(v.flip(1) for v in img_x[2:])]
    out_moved = loss_fn(moved, txt, moved_x, txt_x, t_img, t_txt, return_details=True)
    assert torch.equal(out_moved.clip, out.clip)
    assert abs((out_moved.distillation - out.distillation).item()) > 1e-3

    # Teachers get no gradient; each temperature only from its own term.
    out.clip.backward(retain_graph=True)
    assert all(t.grad is None for t in [*t_img, *t_txt])
    assert loss_fn.distill_logit_scale.log_scale.grad is None
    assert loss_fn.logit_scale.log_scale.grad is not None
    loss_fn.zero_grad()
    out.distillation.backward()
    assert all(t.grad is None for t in [*t_img, *t_txt])
    assert loss_fn.logit_scale.log_scale.grad is None
    assert float(loss_fn.distill_logit_scale.log_scale.grad.abs()) > 0


def test_temperatures_initial_value_and_clamp() -> None:
    loss_fn = COSMOSLoss(dtype=F64, device=DEVICE)
    for scale in (loss_fn.logit_scale, loss_fn.distill_logit_scale):
        assert scale.log_scale.item() == pytest.approx(2.6592600, abs=1e-7)
    with torch.no_grad():
        loss_fn.logit_scale.log_scale.fill_(9.0)
        loss_fn.distill_logit_scale.log_scale.fill_(-2.0)
    loss_fn.clamp_()
    assert loss_fn.logit_scale.log_scale.item() == pytest.approx(4.6051702, abs=1e-7)
    assert loss_fn.distill_logit_scale.log_scale.item() == pytest.approx(0.0, abs=1e-12)


# ----------------------------------------------------------------- autograd and tiling


def test_gradcheck(generator: torch.Generator) -> None:
    xs = [v.requires_grad_() for v in views(2, 3, 4, generator)]
    ys = [v.requires_grad_() for v in views(2, 3, 4, generator)]
    scale = torch.tensor(3.0, dtype=F64, device=DEVICE, requires_grad=True)
    torch.autograd.gradcheck(
        lambda a0, a1, b0, b1, s: multiview_clip_loss([a0, a1], [b0, b1], s),
        (*xs, *ys, scale),
    )
    teacher = views(2, 3, 4, generator)
    torch.autograd.gradcheck(
        lambda a0, a1, b0, s: cosmos_distillation_loss([a0, a1], [b0], teacher[:1], teacher, s),
        (*xs, ys[0], scale),
    )


def test_chunked_path_equals_dense(generator: torch.Generator) -> None:
    xs = [v.requires_grad_() for v in views(3, 7, 5, generator)]
    ys = [v.requires_grad_() for v in views(2, 7, 5, generator)]
    scale = torch.tensor(6.0, dtype=F64, device=DEVICE, requires_grad=True)
    dense = multiview_clip_loss(xs, ys, scale, label_smoothing=0.1)
    chunked = multiview_clip_loss(xs, ys, scale, label_smoothing=0.1, chunk_size=3)
    assert_close(chunked, dense, rtol=1e-12, atol=1e-12)
    wrt = [*xs, *ys, scale]
    for g_c, g_d in zip(torch.autograd.grad(chunked, wrt), torch.autograd.grad(dense, wrt)):
        assert_close(g_c, g_d, rtol=1e-10, atol=1e-12)
    loss_fn = COSMOSLoss(dtype=F64, chunk_size=2, device=DEVICE)
    inputs = cosmos_inputs(generator, n=4, d=3)
    assert_close(loss_fn(*inputs), COSMOSLoss(dtype=F64, device=DEVICE)(*inputs), rtol=1e-12)


@pytest.mark.skipif(not triton_runnable(), reason="triton cannot run here")
def test_triton_tiled_path_equals_dense(generator: torch.Generator) -> None:
    # The fp32 kernel on the test device against the dense path in float64 on the CPU.
    cpu = torch.device("cpu")
    xs64, ys64 = views(2, 5, 4, generator, device=cpu), views(1, 5, 4, generator, device=cpu)
    xs = [dev(v.float()).requires_grad_() for v in xs64]
    ys = [dev(v.float()).requires_grad_() for v in ys64]
    ref_xs = [v.float().double().requires_grad_() for v in xs64]
    ref_ys = [v.float().double().requires_grad_() for v in ys64]
    dense = multiview_clip_loss(ref_xs, ref_ys, 5.0)
    fused = multiview_clip_loss(xs, ys, 5.0, backend="triton")
    assert fused.device.type == DEVICE.type
    assert_kernel_close(fused, dense, torch.float32, msg="loss")
    got = torch.autograd.grad(fused, xs + ys)
    want = torch.autograd.grad(dense, ref_xs + ref_ys)
    for index, (g_f, g_d) in enumerate(zip(got, want)):
        assert_kernel_close(g_f, g_d, torch.float32, msg=f"view {index}")


# ---------------------------------------------------------------------------- bad input


def test_bad_input(generator: torch.Generator) -> None:
    a, b = views(2, 4, 3, generator)
    with pytest.raises(TypeError, match="views_a must be a list"):
        multiview_clip_loss(a, [b], 1.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="views_b must hold at least one view"):
        multiview_clip_loss([a], [], 1.0)
    with pytest.raises(TypeError, match=r"views_b\[1\] must be a torch.Tensor"):
        multiview_clip_loss([a], [b, "x"], 1.0)  # type: ignore[list-item]
    with pytest.raises(ValueError, match=r"every view of views_a .* index 1"):
        multiview_clip_loss([a, a[:3]], [b], 1.0)
    with pytest.raises(ValueError, match="must hold views of one shape"):
        multiview_clip_loss([a], [b[:, :2]], 1.0)
    with pytest.raises(ValueError, match=r"views_a\[0\] must have shape \(N, D\)"):
        multiview_clip_loss([a[0]], [b[0]], 1.0)
    with pytest.raises(ValueError, match="logit_scale must be > 0"):
        multiview_clip_loss([a], [b], -1.0)
    with pytest.raises(ValueError, match="teacher_text must hold at least one view"):
        cosmos_distillation_loss([a], [b], [a], [], 1.0)
    with pytest.raises(ValueError, match="clip_image_views=2"):
        COSMOSLoss(dtype=F64, device=DEVICE)([a], [b], [a], [b], [a], [b])
    with pytest.raises(ValueError, match="clip_image_views must be an int >= 1"):
        COSMOSLoss(clip_image_views=0)


# ------------------------------------------------------------------------- distributed

RANK_SIZES = (3, 4)  # uneven on purpose


def global_views() -> list[list[torch.Tensor]]:
    # CPU views whatever VLP_TEST_DEVICE says: the gloo workers reduce CPU tensors.
    g = torch.Generator().manual_seed(3)
    n, cpu = sum(RANK_SIZES), torch.device("cpu")
    return [views(k, n, 5, g, device=cpu) for k in (3, 2, 2, 1)]


def distributed_worker(rank: int, world: int) -> dict[str, torch.Tensor]:
    start = sum(RANK_SIZES[:rank])
    rows = slice(start, start + RANK_SIZES[rank])
    out: dict[str, torch.Tensor] = {}
    for local_loss in (True, False):
        img_x, txt_x, t_img, t_txt = (
            [v[rows].clone().requires_grad_() for v in group] for group in global_views()
        )
        loss = cosmos_distillation_loss(img_x, txt_x, t_img, t_txt, 6.0, local_loss=local_loss)
        loss.backward()
        out[f"loss_{local_loss}"] = loss.detach()
        out[f"grad_{local_loss}"] = torch.stack([v.grad for v in img_x])
        out[f"teacher_grad_{local_loss}"] = torch.tensor([v.grad is None for v in t_img])
    return out


def test_distributed_equals_single_process_on_the_global_batch() -> None:
    from vlp.testing import run_distributed

    results = run_distributed(distributed_worker)
    img_x, txt_x, t_img, t_txt = (
        [v.clone().requires_grad_() for v in group] for group in global_views()
    )
    single = cosmos_distillation_loss(img_x, txt_x, t_img, t_txt, 6.0)
    single.backward()
    grad = torch.stack([v.grad for v in img_x])
    world = len(RANK_SIZES)
    # local_loss=True: the per-rank values average to the global loss; each rank's rows get
    # W times the single-process gradient (DDP then averages parameter gradients over ranks).
    assert_close(sum(r["loss_True"] for r in results) / world, single.detach(), rtol=1e-12)
    # local_loss=False (the reference's setting): every rank's value is the global loss.
    for r, res in enumerate(results):
        assert_close(res["loss_False"], single.detach(), rtol=1e-12)
        start = sum(RANK_SIZES[:r])
        rows = grad[:, start : start + RANK_SIZES[r]]
        assert_close(res["grad_True"] / world, rows, rtol=1e-10, atol=1e-13)
        assert_close(res["grad_False"] / world, rows, rtol=1e-10, atol=1e-13)
        assert bool(res["teacher_grad_True"].all()) and bool(res["teacher_grad_False"].all())


# ------------------------------------------- distributed: each view is gathered once

# Case name -> (pairs, distinct view tensors, distinct views that carry a gradient).
MULTIVIEW_COUNTS = {
    "multiview": (6, 5, 5),
    "multiview_shared": (6, 4, 4),
    "distillation": (15, 7, 5),
}


def multiview_single_process(name: str, config: dict) -> dict:
    from _gloo_cases import multiview_data, multiview_lists, multiview_loss

    config = {k: v for k, v in config.items() if k not in ("local_loss", "gather_with_grad")}
    views_ = [v.clone().requires_grad_() for v in multiview_data()]
    log_scale = torch.tensor(math.log(6.0), dtype=F64, requires_grad=True)
    loss = multiview_loss(name, multiview_lists(name, views_), log_scale.exp(), **config)
    loss.backward()
    return {"loss": loss.detach(), "grads": [v.grad for v in views_], "scale": log_scale.grad}


def test_distributed_gathers_each_view_once_with_unchanged_values_and_gradients() -> None:
    from _gloo_cases import MULTIVIEW_CASES, MULTIVIEW_SIZES, gloo_results

    results = [r["multiview"] for r in gloo_results()]
    world = len(MULTIVIEW_SIZES)
    for c, (name, config) in enumerate(MULTIVIEW_CASES):
        pairs, distinct, with_grad = MULTIVIEW_COUNTS[name]
        grad_gathers = with_grad if config.get("gather_with_grad", True) else 0
        local_loss = config.get("local_loss", True)
        single = multiview_single_process(name, config)
        per_rank = [res[c]["library"] for res in results]
        for r, res in enumerate(results):
            got, want, msg = res[c]["library"], res[c]["pairwise"], f"case {c} {name} rank {r}"
            # Forward: one size exchange, then one all-gather per distinct view (before the
            # fix: three all-gathers, sizes + image + text, per pair). Backward: one
            # all-reduce per gathered view with a gradient, one for the scale's average.
            assert got["forward"] == {"all_gather": 1 + distinct, "all_reduce": 0}, msg
            assert got["backward"] == {"all_gather": 0, "all_reduce": grad_gathers + 1}, msg
            pair_grads = (2 if name.startswith("multiview") else 1) * (grad_gathers > 0)
            assert want["forward"]["all_gather"] == 3 * pairs, msg
            assert want["backward"]["all_reduce"] == pairs * (pair_grads + 1), msg
            # Same values and gradients as one clip_loss call per pair.
            assert_close(got["loss"], want["loss"], rtol=1e-12, msg=msg)
            assert_close(got["scale"], want["scale"], rtol=1e-10, atol=1e-13, msg=msg)
            for g, w in zip(got["grads"], want["grads"]):
                assert (g is None) == (w is None), msg
                if g is not None:
                    assert_close(g, w, rtol=1e-10, atol=1e-13, msg=msg)
            if not config.get("gather_with_grad", True):
                continue
            # And as one process on the concatenated batch (DDP would divide by W).
            start = sum(MULTIVIEW_SIZES[:r])
            rows = slice(start, start + MULTIVIEW_SIZES[r])
            if not local_loss:
                assert_close(got["loss"], single["loss"], rtol=1e-12, msg=msg)
            assert_close(got["scale"], single["scale"], rtol=1e-10, atol=1e-13, msg=msg)
            for g, s in zip(got["grads"], single["grads"]):
                if s is not None:
                    assert_close(g / world, s[rows], rtol=1e-10, atol=1e-13, msg=msg)
        if local_loss and config.get("gather_with_grad", True):
            mean = sum(p["loss"] for p in per_rank) / world
            assert_close(mean, single["loss"], rtol=1e-12, msg=f"case {c} {name}")
