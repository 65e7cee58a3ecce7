"""FSC-CLIP losses (SCR, global and local hard negatives, NegCLIP, the total) against the spec."""

from __future__ import annotations

import math

import _fsc_reference as ref
import pytest
import torch
import torch.nn.functional as F
from _gloo_cases import LOSS_CASES, Towers, gloo_results, loss_batch, loss_step

from vlp.losses import (
    FSCCLIPLoss,
    clip_loss,
    fsc_clip_loss,
    hard_negative_loss,
    local_hard_negative_loss,
    negclip_loss,
    scr_loss,
)
from vlp.losses.local_hard_negative import _local_scores
from vlp.testing import assert_close

F64 = torch.float64


def _t(values, **kw) -> torch.Tensor:
    return torch.tensor(values, dtype=F64, **kw)


# --------------------------------------------------------------------- spec section 10, T1/T2

T1_LOGITS = [[2.0, 1.0, 0.5, 0.0]]
T1_VALID = torch.tensor([[True, True, False]])


@pytest.mark.parametrize(
    ("gamma", "eps", "expected"),
    [
        (2.0, 0.02, 0.1120911883),  # focal-NSR
        (0.0, 0.02, 0.5626730641),  # CE-NSR
        (2.0, 0.0, 0.0966558992),  # plain focal
        (0.0, 0.0, 0.5460063899),  # plain CE
    ],
)
def test_t1_closed_form(gamma: float, eps: float, expected: float) -> None:
    loss = scr_loss(_t(T1_LOGITS), T1_VALID, gamma=gamma, label_smoothing=eps)
    # The spec's numbers come from float32 targets: ~1e-8 relative.
    assert float(loss) == pytest.approx(expected, rel=1e-7)


def test_t1_gradient() -> None:
    logits = _t(T1_LOGITS, requires_grad=True)
    scr_loss(logits, T1_VALID).backward()
    expected = _t([[-0.174872537, 0.088941426, 0.050421132, 0.035509979]])
    assert_close(logits.grad, expected, rtol=1e-7, atol=1e-9)


def test_t2_masking_is_the_option_not_the_default() -> None:
    zero = scr_loss(_t(T1_LOGITS), T1_VALID, gamma=0.0, label_smoothing=0.0)
    mask = scr_loss(_t(T1_LOGITS), T1_VALID, gamma=0.0, label_smoothing=0.0, missing="mask")
    assert float(mask) == pytest.approx(0.4643687841, rel=1e-9)
    assert float(zero) == pytest.approx(0.5460063899, rel=1e-9)
    assert float(mask) == pytest.approx(
        float(F.cross_entropy(_t([[2.0, 1.0, 0.5]]), torch.tensor([0])))
    )


# ------------------------------------------------------------------------------ SCR properties


def test_scr_targets_from_the_gradient() -> None:
    # With gamma = 0 the gradient of one row is p - q: recover q and check property 1.
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(4, 5, generator=g, dtype=F64, requires_grad=True)
    valid = torch.tensor([[1, 1, 1, 1], [1, 0, 1, 0], [0, 0, 0, 1], [1, 1, 0, 0]], dtype=torch.bool)
    eps = 0.1
    scr_loss(logits, valid, gamma=0.0, label_smoothing=eps).backward()
    p = torch.softmax(logits.detach(), dim=1)
    q = p - 4 * logits.grad  # mean over 4 rows
    assert_close(q.sum(dim=1), torch.ones(4, dtype=F64))
    k = 1 + valid.sum(dim=1).to(F64)
    expected = torch.cat([(1 - eps + eps / k)[:, None], valid.to(F64) * (eps / k)[:, None]], 1)
    assert_close(q, expected)


def test_scr_reduces_to_cross_entropy() -> None:
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(6, 4, generator=g, dtype=F64)
    valid = torch.ones(6, 3, dtype=torch.bool)
    loss = scr_loss(logits, valid, gamma=0.0, label_smoothing=0.0)
    assert_close(loss, F.cross_entropy(logits, torch.zeros(6, dtype=torch.long)))
    # gamma only: the focal loss of the positive alone.
    p0 = torch.softmax(logits, dim=1)[:, 0]
    focal = ((1 - p0) ** 1.5 * -p0.log()).mean()
    assert_close(scr_loss(logits, valid, gamma=1.5, label_smoothing=0.0), focal)


def test_scr_drops_rows_without_negatives() -> None:
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(5, 3, generator=g, dtype=F64, requires_grad=True)
    valid = torch.tensor([[1, 0], [0, 0], [1, 1], [0, 0], [0, 1]], dtype=torch.bool)
    loss = scr_loss(logits, valid)
    kept = torch.tensor([0, 2, 4])
    assert_close(loss, scr_loss(logits[kept], valid[kept]))
    loss.backward()
    assert torch.all(logits.grad[[1, 3]] == 0)
    # No row with a negative: a zero that keeps the graph (the release gives NaN).
    none = scr_loss(logits, torch.zeros(5, 2, dtype=torch.bool))
    assert float(none.detach()) == 0.0 and none.requires_grad


def test_scr_mask_ignores_missing_columns() -> None:
    g = torch.Generator().manual_seed(6)
    logits = torch.randn(3, 4, generator=g, dtype=F64, requires_grad=True)
    valid = torch.tensor([[1, 0, 1], [0, 1, 1], [1, 1, 1]], dtype=torch.bool)
    loss = scr_loss(logits, valid, missing="mask")
    assert_close(loss, ref.scr(logits, valid, 2.0, 0.02, mask=True))
    loss.backward()
    assert torch.all(logits.grad[:, 1:][~valid] == 0)
    other = logits.detach().clone()
    other[:, 1:][~valid] = 40.0
    assert_close(scr_loss(other, valid, missing="mask"), loss)


def test_scr_extreme_logits_are_finite() -> None:
    logits = _t([[300.0, -300.0, 0.0], [-50.0, 60.0, 0.0]], requires_grad=True)
    valid = torch.tensor([[True, False], [True, True]])
    for gamma in (0.0, 0.5, 2.0):
        for missing in ("zero", "mask"):
            logits.grad = None
            loss = scr_loss(logits, valid, gamma=gamma, missing=missing)
            loss.backward()
            assert torch.isfinite(loss) and torch.isfinite(logits.grad).all()


def test_scr_gradcheck() -> None:
    g = torch.Generator().manual_seed(7)
    logits = torch.randn(4, 4, generator=g, dtype=F64, requires_grad=True)
    valid = torch.tensor([[1, 0, 1], [0, 0, 0], [1, 1, 1], [0, 1, 0]], dtype=torch.bool)
    for missing in ("zero", "mask"):
        assert torch.autograd.gradcheck(
            lambda x, m=missing: scr_loss(x, valid, gamma=2.0, missing=m), (logits,)
        )


def test_scr_float32_matches_float64() -> None:
    g = torch.Generator().manual_seed(8)
    logits = torch.randn(8, 4, generator=g, dtype=F64) * 5
    valid = torch.rand(8, 3, generator=g) > 0.3
    assert scr_loss(logits.float(), valid).dtype == torch.float32
    assert scr_loss(logits.half(), valid).dtype == torch.float32
    assert_close(scr_loss(logits.float(), valid), scr_loss(logits, valid).float())


# --------------------------------------------------------------------------- random cases


def _global_case(seed: int, batch: int = 6, num: int = 3, dim: int = 8):
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch, dim, generator=g, dtype=F64)
    text = torch.randn(batch, dim, generator=g, dtype=F64)
    negatives = torch.randn(batch, num, dim, generator=g, dtype=F64)
    mask = torch.rand(batch, num, generator=g) > 0.4
    mask[0] = False  # a row without negatives
    mask[1] = True
    return image, text, negatives, mask


def _local_case(seed: int, batch: int = 4, num: int = 3, patches: int = 5, length: int = 7):
    g = torch.Generator().manual_seed(seed)
    dim = 6
    image_tokens = torch.randn(batch, patches, dim, generator=g, dtype=F64)
    text_tokens = torch.randn(batch, length, dim, generator=g, dtype=F64)
    negative_tokens = torch.randn(batch, num, length, dim, generator=g, dtype=F64)
    lengths = torch.randint(1, length, (batch, num + 1), generator=g)
    positions = torch.arange(length)
    token_masks = (positions >= 1) & (positions <= lengths[..., None])  # SOT excluded
    mask = torch.rand(batch, num, generator=g) > 0.4
    mask[0] = False
    mask[1] = True
    return image_tokens, text_tokens, token_masks[:, 0], negative_tokens, token_masks[:, 1:], mask


def _local_reference(case, scale, **kw):
    image_tokens, text_tokens, text_mask, negative_tokens, negative_token_mask, mask = case
    rows, flat = ref.compact(negative_tokens, mask)
    token_rows, _ = ref.compact(negative_token_mask, mask)
    tokens = torch.cat([text_tokens, rows])
    token_mask = torch.cat([text_mask, token_rows])
    return ref.local_loss(image_tokens, tokens, token_mask, flat, scale, **kw)


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("missing", ["zero", "mask"])
def test_global_matches_reference(seed: int, missing: str) -> None:
    image, text, negatives, mask = (
        x.requires_grad_() if x.is_floating_point() else x for x in _global_case(seed)
    )
    scale = torch.tensor(12.0, dtype=F64, requires_grad=True)
    ours = hard_negative_loss(image, text, negatives, mask, scale, missing=missing)
    compact, flat = ref.compact(negatives, mask)
    theirs = ref.global_loss(image, text, compact, flat, scale, mask=missing == "mask")
    assert_close(ours, theirs)
    inputs = (image, text, negatives, scale)
    assert_close(
        torch.cat([g.flatten() for g in torch.autograd.grad(ours, inputs)]),
        torch.cat([g.flatten() for g in torch.autograd.grad(theirs, inputs)]),
    )


@pytest.mark.parametrize(
    ("seed", "kw"),
    [
        (0, {}),
        (1, {"normalizer": "softmax"}),
        (2, {"sparsify": True}),
        (3, {"missing": "mask", "gamma": 1.0, "label_smoothing": 0.1}),
    ],
)
def test_local_matches_reference(seed: int, kw: dict) -> None:
    case = [x.requires_grad_() if x.is_floating_point() else x for x in _local_case(seed)]
    scale = torch.tensor(10.0, dtype=F64, requires_grad=True)
    ours = local_hard_negative_loss(*case, scale, **kw)
    ref_kw = dict(kw)
    ref_kw["mask"] = ref_kw.pop("missing", "zero") == "mask"
    if "label_smoothing" in ref_kw:
        ref_kw["eps"] = ref_kw.pop("label_smoothing")
    theirs = _local_reference(case, scale, **ref_kw)
    assert_close(ours, theirs)
    inputs = (case[0], case[1], case[3], scale)
    assert_close(
        torch.cat([g.flatten() for g in torch.autograd.grad(ours, inputs)]),
        torch.cat([g.flatten() for g in torch.autograd.grad(theirs, inputs)]),
    )


def test_local_weights_are_stop_gradient() -> None:
    # Property 7: autograd through the weights would give other gradients.
    case = [x.requires_grad_() if x.is_floating_point() else x for x in _local_case(4)]
    ours = local_hard_negative_loss(*case, 10.0)
    through = _local_reference(case, 10.0, detach=False)
    assert_close(ours, through)  # same value ...
    g_ours = torch.autograd.grad(ours, case[0])[0]
    g_through = torch.autograd.grad(through, case[0])[0]
    assert (g_ours - g_through).abs().max() > 1e-4  # ... different gradient


def test_local_gradient_is_the_frozen_weight_derivative() -> None:
    # gradcheck cannot see a stop-gradient; freeze the weights and check that function instead.
    g = torch.Generator().manual_seed(9)
    u = torch.randn(3, 4, 5, generator=g, dtype=F64, requires_grad=True)
    v = torch.randn(3, 6, 5, generator=g, dtype=F64, requires_grad=True)
    m = torch.tensor([[0, 1, 1, 1], [0, 1, 0, 0], [0, 1, 1, 0]], dtype=torch.bool)
    scale = torch.tensor(7.0, dtype=F64)
    with torch.no_grad():
        sim = torch.einsum("rtd,rpd->rtp", u, v)
        lo, hi = sim.amin(-1, keepdim=True), sim.amax(-1, keepdim=True)
        w = (sim - lo) / (hi - lo)
        w = w / w.sum(-1, keepdim=True)

    def frozen(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        grounded = F.normalize(torch.einsum("rtp,rpd->rtd", w, v), dim=-1)
        c = scale * (grounded * F.normalize(u, dim=-1)).sum(-1)
        return torch.logsumexp(c.masked_fill(~m, -math.inf), dim=-1)

    assert torch.autograd.gradcheck(frozen, (u, v))
    weights = torch.randn(3, generator=g, dtype=F64)
    ours = (_local_scores(u, m, v, None, scale) * weights).sum()
    expected = (frozen(u, v) * weights).sum()
    assert_close(ours, expected)
    for a, b in zip(torch.autograd.grad(ours, (u, v)), torch.autograd.grad(expected, (u, v))):
        assert_close(a, b)


def test_local_gradcheck_in_the_scale() -> None:
    case = _local_case(5)
    scale = torch.tensor(6.0, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda s: local_hard_negative_loss(*case, s), (scale,))


# --------------------------------------------------------------------- section 10 properties


def test_permuting_negative_types_changes_nothing() -> None:
    image, text, negatives, mask = _global_case(10)
    perm = torch.tensor([2, 0, 1])
    a = hard_negative_loss(image, text, negatives, mask, 9.0)
    b = hard_negative_loss(image, text, negatives[:, perm], mask[:, perm], 9.0)
    assert_close(a, b)
    it, tt, tm, nt, ntm, m = _local_case(10)
    a = local_hard_negative_loss(it, tt, tm, nt, ntm, m, 9.0)
    b = local_hard_negative_loss(it, tt, tm, nt[:, perm], ntm[:, perm], m[:, perm], 9.0)
    assert_close(a, b)


def test_rows_without_negatives_change_nothing() -> None:
    image, text, negatives, mask = _global_case(11)
    mask[0] = True
    extra = [torch.randn(1, *x.shape[1:], dtype=F64) for x in (image, text, negatives)]
    a = hard_negative_loss(image, text, negatives, mask, 9.0)
    b = hard_negative_loss(
        *(torch.cat([x, e]) for x, e in zip((image, text, negatives), extra)),
        torch.cat([mask, torch.zeros(1, 3, dtype=torch.bool)]),
        9.0,
    )
    assert_close(a, b)
    it, tt, tm, nt, ntm, m = _local_case(11)
    a = local_hard_negative_loss(it, tt, tm, nt, ntm, m, 9.0)
    keep = torch.arange(1, 4)  # row 0 has no negative
    b = local_hard_negative_loss(it[keep], tt[keep], tm[keep], nt[keep], ntm[keep], m[keep], 9.0)
    assert_close(a, b)


def test_missing_negatives_score_zero_and_are_ignored() -> None:
    # Property 8: a missing negative's logit is exactly 0, whatever its slot holds.
    image, text, negatives, mask = _global_case(12)
    image.requires_grad_()
    zeroed = torch.where(mask[..., None], negatives, torch.zeros_like(negatives))
    garbage = torch.where(mask[..., None], negatives, 1e3 * torch.randn_like(negatives))
    logits = 9.0 * torch.cat(
        [
            (F.normalize(image, dim=-1) * F.normalize(text, dim=-1)).sum(-1, keepdim=True),
            torch.einsum("bd,bnd->bn", F.normalize(image, dim=-1), F.normalize(zeroed, dim=-1)),
        ],
        dim=1,
    )
    expected = scr_loss(logits, mask)
    for negs in (zeroed, garbage):
        assert_close(hard_negative_loss(image, text, negs, mask, 9.0), expected)
    it, tt, tm, nt, ntm, m = (
        x.requires_grad_() if x.is_floating_point() else x for x in _local_case(12)
    )
    loss = local_hard_negative_loss(it, tt, tm, nt, ntm, m, 9.0)
    grads = torch.autograd.grad(loss, (it, nt))
    assert torch.all(grads[1][~m] == 0)
    # Neither the tokens nor the token masks of missing slots are read.
    noisy = torch.where(m[..., None, None], nt, 50 * torch.randn_like(nt))
    flipped_masks = torch.where(m[..., None], ntm, ~ntm)
    again = local_hard_negative_loss(it, tt, tm, noisy, flipped_masks, m, 9.0)
    assert_close(again, loss)
    assert_close(torch.autograd.grad(again, it)[0], grads[0])


def test_tokens_outside_the_mask_change_nothing() -> None:
    # Property 5: SOT and padding positions change neither the loss nor any gradient.
    case = [x.requires_grad_() if x.is_floating_point() else x for x in _local_case(13)]
    it, tt, tm, nt, ntm, m = case
    loss = local_hard_negative_loss(*case, 9.0)
    grads = torch.autograd.grad(loss, (it, tt, nt))
    tt2 = torch.where(tm[..., None], tt, torch.zeros_like(tt))  # zeros: all-equal similarities
    nt2 = torch.where(ntm[..., None], nt, 1e2 * torch.randn_like(nt))
    loss2 = local_hard_negative_loss(it, tt2, tm, nt2, ntm, m, 9.0)
    assert_close(loss2, loss)
    grads2 = torch.autograd.grad(loss2, (it, tt2, nt2))
    assert_close(grads2[0], grads[0])
    assert torch.all(grads2[1][~tm] == 0) and torch.all(grads2[2][~ntm] == 0)
    assert_close(grads2[1][tm], grads[1][tm])


def test_token_scale_invariance_of_minmax() -> None:
    # Property 6: scaling one text token by c > 0 leaves the min-max score unchanged.
    g = torch.Generator().manual_seed(14)
    u = torch.randn(2, 5, 4, generator=g, dtype=F64)
    v = torch.randn(2, 6, 4, generator=g, dtype=F64)
    m = torch.ones(2, 5, dtype=torch.bool)
    scale = torch.tensor(5.0, dtype=F64)
    u2 = u.clone()
    u2[:, 2] *= 3.7
    assert_close(_local_scores(u2, m, v, None, scale), _local_scores(u, m, v, None, scale))
    a = _local_scores(u2, m, v, None, scale, normalizer="softmax")
    b = _local_scores(u, m, v, None, scale, normalizer="softmax")
    assert (a - b).abs().max() > 1e-3


def test_flat_similarities_give_uniform_weights() -> None:
    # The release divides by zero here; vlp uses uniform weights (the mean patch).
    v = torch.randn(1, 4, 3, dtype=F64)
    u = torch.zeros(1, 2, 3, dtype=F64)
    u[0, 1] = torch.tensor([1.0, 0.0, 0.0])
    m = torch.tensor([[True, True]])
    score = _local_scores(u, m, v, None, torch.tensor(2.0, dtype=F64))
    assert torch.isfinite(score).all()


# ------------------------------------------------------------------------------------ NegCLIP


@pytest.mark.parametrize("missing", ["zero", "mask"])
def test_negclip_matches_reference(missing: str) -> None:
    image, text, negatives, mask = (
        x.requires_grad_() if x.is_floating_point() else x for x in _global_case(20)
    )
    scale = torch.tensor(11.0, dtype=F64, requires_grad=True)
    ours = negclip_loss(image, text, negatives, mask, scale, missing=missing)
    compact, flat = ref.compact(negatives, mask)
    theirs = ref.negclip(image, text, compact, flat, scale, mask=missing == "mask")
    assert_close(ours, theirs)
    inputs = (image, text, negatives, scale)
    for a, b in zip(torch.autograd.grad(ours, inputs), torch.autograd.grad(theirs, inputs)):
        assert_close(a, b)


def test_negclip_shapes_and_limits() -> None:
    image, text, negatives, _ = _global_case(21, num=1)
    # (B, D) means one negative per caption.
    assert_close(
        negclip_loss(image, text, negatives[:, 0], None, 5.0),
        negclip_loss(image, text, negatives, None, 5.0),
    )
    none = torch.zeros(6, 1, dtype=torch.bool)
    masked = negclip_loss(image, text, negatives, none, 5.0, missing="mask")
    assert_close(masked, clip_loss(image, text, 5.0))
    # Zero mode: every missing negative is a column of logit 0 for every image.
    zero = negclip_loss(image, text, negatives, none, 5.0)
    logits = 5.0 * F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
    i2t = F.cross_entropy(torch.cat([logits, torch.zeros(6, 6, dtype=F64)], 1), torch.arange(6))
    assert_close(zero, (i2t + F.cross_entropy(logits.T, torch.arange(6))) / 2)


def test_negclip_gradcheck() -> None:
    image, text, negatives, mask = _global_case(22, batch=3, num=2, dim=4)
    inputs = tuple(x.clone().requires_grad_() for x in (image, text, negatives))
    assert torch.autograd.gradcheck(lambda i, t, n: negclip_loss(i, t, n, mask, 4.0), inputs)


def test_global_gradcheck() -> None:
    image, text, negatives, mask = _global_case(23, batch=3, num=2, dim=4)
    inputs = tuple(x.clone().requires_grad_() for x in (image, text, negatives))
    scale = torch.tensor(3.0, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda i, t, n, s: hard_negative_loss(i, t, n, mask, s), (*inputs, scale)
    )


# ------------------------------------------------------------------------------ FSC-CLIP total


def test_fsc_clip_total_and_parts() -> None:
    image, text, negatives, mask = _global_case(30, batch=4, dim=6)
    it, tt, tm, nt, ntm, _ = _local_case(30, batch=4, num=3)
    tokens = {
        "image_tokens": it, "text_tokens": tt, "text_mask": tm, "negative_tokens": nt,
        "negative_token_mask": ntm,
    }  # fmt: skip
    out = fsc_clip_loss(image, text, negatives, mask, 8.0, **tokens, return_details=True)
    clip = clip_loss(image, text, 8.0)
    glob = hard_negative_loss(image, text, negatives, mask, 8.0)
    loc = local_hard_negative_loss(it, tt, tm, nt, ntm, mask, 8.0)
    assert_close(out.clip, clip)
    assert_close(out.global_negative, glob)
    assert_close(out.local_negative, loc)
    assert_close(out.loss, clip + 0.5 * glob + 0.2 * loc)
    assert_close(fsc_clip_loss(image, text, negatives, mask, 8.0, **tokens), out.loss)
    # Property 9: the CLIP term never sees the hard negatives.
    other = fsc_clip_loss(image, text, -negatives, mask, 8.0, **tokens, return_details=True)
    assert torch.equal(other.clip, out.clip)
    only_global = fsc_clip_loss(image, text, negatives, mask, 8.0, lambda_local=0.0)
    assert_close(only_global, clip + 0.5 * glob)


def test_fsc_clip_module() -> None:
    image, text, negatives, mask = _global_case(31)
    loss_fn = FSCCLIPLoss(init_scale=20.0, lambda_global=1.0, lambda_local=0.0, dtype=F64)
    out = loss_fn(image, text, negatives, mask, return_details=True)
    assert_close(
        out.loss,
        clip_loss(image, text, 20.0) + hard_negative_loss(image, text, negatives, mask, 20.0),
    )
    out.loss.backward()
    assert loss_fn.logit_scale.log_scale.grad is not None
    assert "lambda_global=1.0" in repr(loss_fn)
    with pytest.raises(ValueError, match="image_tokens, text_tokens"):
        FSCCLIPLoss(10.0)(image.float(), text.float(), negatives.float(), mask)


def test_fsc_clip_module_has_no_silent_default_scale() -> None:
    with pytest.raises(ValueError, match=r"init_scale is required.*from_model"):
        FSCCLIPLoss()
    with pytest.raises(ValueError, match="init_scale is required"):
        FSCCLIPLoss(lambda_local=0.0)


def test_fsc_clip_from_model_reads_the_open_clip_scale() -> None:
    from adapters_models import make_clip

    from vlp.losses import LogitScale

    model = make_clip()
    with torch.no_grad():
        model.logit_scale.fill_(4.6052)  # OpenAI's stored ln 100, rounded up: 100.0004
    loss_fn = FSCCLIPLoss.from_model(model, lambda_global=1.0, lambda_local=0.0)
    assert float(loss_fn.logit_scale().detach()) == pytest.approx(100.0, rel=1e-6)
    assert float(loss_fn.logit_scale().detach()) <= 100.0  # clipped into [min, max]
    assert loss_fn.logit_scale.log_scale.dtype == model.logit_scale.dtype
    assert loss_fn.lambda_global == 1.0 and loss_fn.lambda_local == 0.0
    with torch.no_grad():
        model.logit_scale.fill_(math.log(30.0))
    loss_fn = FSCCLIPLoss.from_model(model, lambda_local=0.0, dtype=F64)
    scale = float(loss_fn.logit_scale().detach())
    assert scale == math.exp(float(model.logit_scale.detach()))
    assert scale == pytest.approx(30.0, rel=1e-6)
    image, text, negatives, mask = _global_case(33)
    assert_close(
        loss_fn(image, text, negatives, mask),
        fsc_clip_loss(image, text, negatives, mask, scale, lambda_local=0.0),
    )
    # a LogitScale (or a module holding one) works as well; the value is copied
    own = LogitScale(50.0, dtype=F64)
    assert float(FSCCLIPLoss.from_model(own).logit_scale().detach()) == pytest.approx(50.0)
    holder = torch.nn.Module()
    holder.logit_scale = own
    copied = FSCCLIPLoss.from_model(holder)
    assert copied.logit_scale.log_scale is not own.log_scale
    assert float(copied.logit_scale().detach()) == pytest.approx(50.0)


def test_fsc_clip_from_model_bad_input() -> None:
    from adapters_models import make_clip

    with pytest.raises(TypeError, match="scalar logit_scale"):
        FSCCLIPLoss.from_model(torch.nn.Linear(2, 2))
    model = make_clip()
    with pytest.raises(TypeError, match="do not pass it"):
        FSCCLIPLoss.from_model(model, init_scale=10.0)
    with torch.no_grad():
        model.logit_scale.fill_(math.log(200.0))
    with pytest.raises(ValueError, match=r"200 > max_scale=100"):
        FSCCLIPLoss.from_model(model)
    assert float(FSCCLIPLoss.from_model(model, max_scale=250.0).logit_scale().detach()) == (
        pytest.approx(200.0)
    )
    with torch.no_grad():
        model.logit_scale.fill_(float("nan"))
    with pytest.raises(ValueError, match="not finite"):
        FSCCLIPLoss.from_model(model)


def test_fsc_clip_gradcheck_global_part() -> None:
    image, text, negatives, mask = _global_case(32, batch=3, num=2, dim=4)
    inputs = tuple(x.clone().requires_grad_() for x in (image, text, negatives))
    assert torch.autograd.gradcheck(
        lambda i, t, n: fsc_clip_loss(i, t, n, mask, 5.0, lambda_local=0.0), inputs
    )


# ---------------------------------------------------------------------------------- bad input


def test_bad_input() -> None:
    image, text, negatives, mask = _global_case(40)
    logits = torch.zeros(3, 4, dtype=F64)
    valid = torch.ones(3, 3, dtype=torch.bool)
    with pytest.raises(ValueError, match=r"logits must have 1 \+ N columns with N >= 1"):
        scr_loss(torch.zeros(3, 1), torch.ones(3, 0, dtype=torch.bool))
    with pytest.raises(TypeError, match="negative_mask must have dtype torch.bool, got torch.int"):
        scr_loss(logits, valid.long())
    with pytest.raises(ValueError, match=r"negative_mask must have shape \(3, 3\)"):
        scr_loss(logits, valid[:, :2])
    with pytest.raises(ValueError, match="gamma must be a finite number >= 0, got -1"):
        scr_loss(logits, valid, gamma=-1.0)
    with pytest.raises(ValueError, match=r"label_smoothing must be .* in \[0, 1\), got 1.0"):
        scr_loss(logits, valid, label_smoothing=1.0)
    with pytest.raises(ValueError, match="missing must be 'zero' or 'mask', got 'drop'"):
        scr_loss(logits, valid, missing="drop")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="logits must be finite"):
        scr_loss(torch.full((3, 4), math.nan), valid)
    with pytest.raises(TypeError, match="logits must have a floating-point dtype"):
        scr_loss(torch.zeros(3, 4, dtype=torch.long), valid)
    with pytest.raises(ValueError, match=r"negative_features must have shape \(6, N, 8\)"):
        hard_negative_loss(image, text, negatives[..., :5], mask, 5.0)
    with pytest.raises(ValueError, match=r"negative_mask must have shape \(6, 3\)"):
        hard_negative_loss(image, text, negatives, mask[:, :2], 5.0)
    with pytest.raises(TypeError, match="negative_features must have the dtype of image_features"):
        hard_negative_loss(image, text, negatives.float(), mask, 5.0)
    with pytest.raises(ValueError, match="logit_scale must be > 0, got 0.0"):
        hard_negative_loss(image, text, negatives, mask, 0.0)
    with pytest.raises(ValueError, match=r"text_features must have shape \(6, 8\)"):
        negclip_loss(image, text[:4], negatives, None, 5.0)
    it, tt, tm, nt, ntm, m = _local_case(40)
    with pytest.raises(ValueError, match=r"negative_tokens must have shape \(4, N, 7, 6\)"):
        local_hard_negative_loss(it, tt, tm, nt[:, :, :5], ntm, m, 5.0)
    with pytest.raises(TypeError, match="text_mask must have dtype torch.bool"):
        local_hard_negative_loss(it, tt, tm.long(), nt, ntm, m, 5.0)
    with pytest.raises(ValueError, match="normalizer must be 'minmax' or 'softmax'"):
        local_hard_negative_loss(it, tt, tm, nt, ntm, m, 5.0, normalizer="max")  # type: ignore[arg-type]
    empty = tm.clone()
    empty[2] = False
    with pytest.raises(ValueError, match="at least one counted token"):
        local_hard_negative_loss(it, tt, empty, nt, ntm, m, 5.0)
    with pytest.raises(ValueError, match="lambda_local must be a finite number >= 0"):
        fsc_clip_loss(image, text, negatives, mask, 5.0, lambda_local=-0.1)
    # Tokens of another batch than the pooled features: the error names the tokens.
    tokens = {"text_tokens": tt, "text_mask": tm, "negative_tokens": nt, "negative_token_mask": ntm}
    with pytest.raises(ValueError, match=r"image_tokens must have shape \(6, P, D\)"):
        fsc_clip_loss(image, text, negatives, mask, 5.0, image_tokens=it, **tokens)


# ------------------------------------------------------------------- NegCLIP, two gloo ranks

NEGCLIP_CASES = [i for i, (name, _) in enumerate(LOSS_CASES) if name == "negclip"]


@pytest.mark.parametrize("index", NEGCLIP_CASES)
def test_negclip_two_process_ddp_matches_single_process(index: int) -> None:
    # Ranks hold 4 and 5 pairs (two negatives each, some missing); the model is DDP-wrapped.
    name, config = LOSS_CASES[index]
    x, t, ids = loss_batch()
    single = loss_step(Towers(), x, t, ids, name, config)
    per_rank = [r["losses"][index] for r in gloo_results()]
    losses = torch.stack([r["loss"] for r in per_rank])
    assert_close(losses.mean(), single["loss"], msg="mean of per-rank losses")
    if not config.get("local_loss", True):
        assert_close(losses, single["loss"].expand(2), msg="global loss on every rank")
    for param, want in single["grads"].items():
        got = per_rank[0]["grads"][param]
        assert_close(got, per_rank[1]["grads"][param], msg=param)
        if config.get("gather_with_grad", True):
            assert_close(got, want, msg=param)
        elif not config.get("local_loss", True):
            assert_close(got * 2, want, msg=param)
        else:
            assert (got - want).abs().max() > 1e-6
    for r in per_rank:
        assert_close(r["scale"], single["scale"], msg="logit scale gradient")


@pytest.mark.parametrize("missing", ["zero", "mask"])
@pytest.mark.parametrize("chunk_size", [1, 3, 64])
def test_negclip_tiled_matches_dense(missing: str, chunk_size: int) -> None:
    # The tiled path never forms the (B, B + B N) logits; same value and gradients.
    image, text, negatives, mask = _global_case(24)
    inputs = tuple(x.clone().requires_grad_() for x in (image, text, negatives))
    scale = torch.tensor(7.0, dtype=F64, requires_grad=True)
    dense = negclip_loss(*inputs, mask, scale, missing=missing)
    tiled = negclip_loss(
        *inputs, mask, scale, missing=missing, chunk_size=chunk_size, backend="torch"
    )
    assert_close(tiled, dense)
    for a, b in zip(
        torch.autograd.grad(tiled, (*inputs, scale)), torch.autograd.grad(dense, (*inputs, scale))
    ):
        assert_close(a, b)
    with pytest.raises(TypeError, match="chunk_size must be an int"):
        negclip_loss(*inputs, mask, scale, chunk_size=2.0)  # type: ignore[arg-type]
