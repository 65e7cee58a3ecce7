"""A float64 re-statement of the FSC-CLIP release's losses, written from its spec, for tests.

It follows the release's data layout on purpose, not vlp's: hard negatives arrive as a
*compact* list in type-major order with an ``N * B`` int mask (spec section 1.1), are
zero-filled and reshaped with ``stack(split(B), dim=1)`` (section 2.2), the local loss scores
the compact rows against ``image_tokens[mask_j > 0]`` type by type (section 4), and every row
of SCR is a Python loop over the classes (section 3.1). Nothing here is vectorised the way
the library is, so agreement is evidence, not a tautology.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def compact(negatives: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """vlp's ``(B, N, ...)`` grid + ``(B, N)`` mask -> the release's compact rows + int mask."""
    batch, num = mask.shape
    rows = [negatives[i, j] for j in range(num) for i in range(batch) if bool(mask[i, j])]
    flat_mask = torch.tensor([int(mask[i, j]) for j in range(num) for i in range(batch)])
    if rows:
        return torch.stack(rows), flat_mask
    return negatives.new_zeros((0, *negatives.shape[2:])), flat_mask


def scr_row(
    logits: list[torch.Tensor], valid: list[bool], gamma: float, eps: float, mask: bool
) -> torch.Tensor:
    """One row of ``_focal_loss_with_nsr`` (or its -inf-masked variant when ``mask``)."""
    k = 1 + sum(valid)
    columns = [0] + [j + 1 for j, v in enumerate(valid) if v or not mask]
    row = torch.stack([logits[c] for c in columns])
    log_p = row - torch.logsumexp(row, dim=0)
    total = row.new_zeros(())
    for index, c in enumerate(columns):
        if c == 0:
            q = 1 - eps + eps / k
        elif valid[c - 1]:
            q = eps / k
        else:
            continue
        p = log_p[index].exp()
        total = total + q * (1 - p) ** gamma * (-log_p[index])
    return total


def scr(logits: torch.Tensor, valid: torch.Tensor, gamma: float, eps: float, mask: bool = False):
    """Mean of :func:`scr_row` over the rows with a valid negative."""
    losses = []
    for b in range(logits.shape[0]):
        v = [bool(x) for x in valid[b]]
        if any(v):
            losses.append(scr_row(list(logits[b]), v, gamma, eps, mask))
    return torch.stack(losses).mean()


def global_loss(image, text, negatives, neg_mask, scale, gamma=2.0, eps=0.02, mask=False):
    """``Global_HNLoss``'s hard-negative term; ``negatives`` compact, ``neg_mask`` (N*B,)."""
    batch = image.shape[0]
    num = neg_mask.numel() // batch
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    filled = image.new_zeros(num * batch, image.shape[1])
    if negatives.shape[0]:
        filled = filled.index_put(
            (torch.nonzero(neg_mask > 0)[:, 0],), F.normalize(negatives, dim=-1)
        )
    grid = torch.stack(filled.split(batch), dim=1)
    candidates = torch.cat([text[:, None], grid], dim=1)
    logits = scale * torch.einsum("bkd,bld->bkl", image[:, None], candidates)[:, 0]
    valid = torch.stack(neg_mask.split(batch), dim=1) > 0
    return scr(logits, valid, gamma, eps, mask)


def _score(u, m, v, scale, normalizer, sparsify, detach):
    """Local score of one caption ``u`` (T, D) with mask ``m`` against patches ``v`` (P, D)."""
    sim = u @ v.T
    if detach:
        sim = sim.detach()
    if normalizer == "minmax":
        lo = sim.min(dim=1, keepdim=True).values
        hi = sim.max(dim=1, keepdim=True).values
        w = (sim - lo) / (hi - lo)
        if sparsify:
            w = torch.where(w < 1 / v.shape[0], torch.zeros_like(w), w)
        w = w / w.sum(dim=1, keepdim=True)
    else:
        w = torch.softmax(sim, dim=1)
    vbar = w @ v
    vhat = vbar / vbar.norm(dim=1, keepdim=True)
    uhat = u / u.norm(dim=1, keepdim=True)
    c = scale * (vhat * uhat).sum(dim=1)
    return torch.logsumexp(c[m], dim=0)


def local_loss(
    image_tokens, text_tokens, attn_mask, neg_mask, scale, gamma=2.0, eps=0.02,
    normalizer="minmax", sparsify=False, mask=False, detach=True,
):  # fmt: skip
    """``Local_HNLoss``'s local term; rows ``[B positives; M compact negatives]``."""
    batch = image_tokens.shape[0]
    num = neg_mask.numel() // batch
    per_type = neg_mask.view(num, batch)
    positives = [
        _score(text_tokens[i], attn_mask[i], image_tokens[i], scale, normalizer, sparsify, detach)
        for i in range(batch)
    ]
    negatives = []
    start = batch
    for j in range(num):
        owners = image_tokens[per_type[j] > 0]
        for k in range(owners.shape[0]):
            r = start + k
            negatives.append(
                _score(text_tokens[r], attn_mask[r], owners[k], scale, normalizer, sparsify, detach)
            )
        start += owners.shape[0]
    filled = [image_tokens.new_zeros(()) for _ in range(num * batch)]
    for slot, value in zip(torch.nonzero(neg_mask > 0)[:, 0].tolist(), negatives):
        filled[slot] = value
    logits = torch.stack(
        [
            torch.stack([positives[i]] + [filled[j * batch + i] for j in range(num)])
            for i in range(batch)
        ]
    )
    valid = per_type.T > 0
    return scr(logits, valid, gamma, eps, mask)


def negclip(image, text, negatives, neg_mask, scale, mask=False):
    """``ClipLoss`` with zero-filled negatives appended to the image-to-text columns."""
    batch = image.shape[0]
    image, text = F.normalize(image, dim=-1), F.normalize(text, dim=-1)
    filled = image.new_zeros(neg_mask.numel(), image.shape[1])
    if negatives.shape[0]:
        filled = filled.index_put(
            (torch.nonzero(neg_mask > 0)[:, 0],), F.normalize(negatives, dim=-1)
        )
    columns = torch.cat([text, filled])
    i2t = scale * image @ columns.T
    if mask:
        keep = torch.cat([torch.ones(batch, dtype=torch.bool), neg_mask > 0])
        i2t = i2t.masked_fill(~keep, -math.inf)
    t2i = scale * text @ image.T
    labels = torch.arange(batch)
    return (F.cross_entropy(i2t, labels) + F.cross_entropy(t2i, labels)) / 2
