"""2-process gloo fault cases: every one must end in the same clear error on every rank.

Each case runs on both ranks inside one spawn (with a 20 s process-group timeout, so a
hang becomes a timeout error instead of blocking the suite) and records, per rank, the
error raised (type, message, seconds taken) or the value returned. Errors raised on every
rank after the same collectives leave the group usable, so the cases run one after the
other in the same processes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from typing import Any

import torch

from vlp.distributed import all_gather_no_grad, all_gather_sizes, all_gather_with_grad
from vlp.losses import (
    clip_loss,
    contrastive_distillation_loss,
    cosmos_distillation_loss,
    multiview_clip_loss,
    negclip_loss,
    siglip_loss,
)
from vlp.testing import run_distributed

F64 = torch.float64
TIMEOUT = 20.0


def _features(rank: int, rows: int, dim: int, dtype: torch.dtype = F64) -> torch.Tensor:
    g = torch.Generator().manual_seed(100 + rank)
    return torch.randn(rows, dim, generator=g, dtype=dtype)


def gather_trailing_dim(rank: int) -> Any:
    return all_gather_no_grad(_features(rank, 3, (8, 6)[rank]))


def gather_trailing_rank(rank: int) -> Any:
    x = _features(rank, 3, 8)
    return all_gather_no_grad(x if rank == 0 else x.reshape(3, 2, 4))


def gather_dtype(rank: int) -> Any:
    return all_gather_with_grad(_features(rank, 3, 4, (F64, torch.float32)[rank]))


def sizes_with_failure(rank: int) -> Any:
    failure = ValueError("image_features must be finite, got 1 NaN") if rank == 1 else None
    return all_gather_sizes(_features(rank, 2, 4), failure=failure, caller="some_loss")


def sizes_with_facts(rank: int) -> Any:
    facts = {"sample_ids": rank == 0, "negatives N": 3, "scale dtype": (F64, F64)[rank]}
    return all_gather_sizes(_features(rank, 2, 4), facts=facts, caller="some_loss")


def sizes_different_callers(rank: int) -> Any:
    return all_gather_sizes(_features(rank, 2, 4), caller=("clip_loss", "siglip_loss")[rank])


def gather_local_only(rank: int) -> Any:
    # group=False: no collective at all, so one rank alone may call it.
    if rank == 0:
        x = _features(rank, 3, 4)
        return torch.equal(all_gather_no_grad(x, group=False), x), all_gather_sizes(x, False)
    return None


def healthy_after_faults(rank: int) -> Any:
    # The group still works after every fault above.
    return all_gather_no_grad(torch.full((rank + 1, 2), float(rank)))


# ---------------------------------------------------------------------- faults in losses


def clip_dim(rank: int) -> Any:
    d = (8, 6)[rank]
    return clip_loss(_features(rank, 3, d), _features(rank + 2, 3, d), 5.0)


def siglip_dim(rank: int) -> Any:
    d = (8, 6)[rank]
    return siglip_loss(_features(rank, 3, d), _features(rank + 2, 3, d), 5.0, -1.0)


def distill_dim(rank: int) -> Any:
    d = (8, 6)[rank]
    x = [_features(rank + k, 3, d) for k in range(3)]
    return contrastive_distillation_loss(*x, None, 5.0, local_targets=False)


def clip_dtype(rank: int) -> Any:
    dtype = (F64, torch.float32)[rank]
    return clip_loss(_features(rank, 3, 4, dtype), _features(rank + 2, 3, 4, dtype), 5.0)


def clip_scale_grad(rank: int) -> Any:
    scale = torch.tensor(5.0, dtype=F64, requires_grad=rank == 0)
    return clip_loss(_features(rank, 3, 4), _features(rank + 2, 3, 4), scale)


def clip_sample_ids_one_rank(rank: int) -> Any:
    ids = torch.arange(3) if rank == 0 else None
    return clip_loss(_features(rank, 3, 4), _features(rank + 2, 3, 4), 5.0, sample_ids=ids)


def clip_nan(rank: int) -> Any:
    x = _features(rank, 3, 4)
    if rank == 1:
        x[1, 2] = float("nan")
    return clip_loss(x, _features(rank + 2, 3, 4), 5.0)


def siglip_bad_scale(rank: int) -> Any:
    scale = (5.0, -1.0)[rank]
    return siglip_loss(_features(rank, 3, 4), _features(rank + 2, 3, 4), scale, -1.0)


def clip_all_empty(rank: int) -> Any:
    return clip_loss(_features(rank, 0, 4), _features(rank + 2, 0, 4), 5.0)


def negclip_negatives(rank: int) -> Any:
    n = (2, 3)[rank]
    x, t = _features(rank, 3, 4), _features(rank + 2, 3, 4)
    negatives = _features(rank + 4, 3 * n, 4).reshape(3, n, 4)
    return negclip_loss(x, t, negatives, None, 5.0)


def multiview_views(rank: int) -> Any:
    views = [_features(rank + k, 3, 4) for k in range((2, 3)[rank])]
    return multiview_clip_loss(views, [_features(rank + 7, 3, 4)], 5.0)


def cosmos_empty_teacher_list(rank: int) -> Any:
    # A bad list on rank 0 only: rejected there, and rank 1 is told instead of waiting.
    v = [_features(rank + k, 3, 4) for k in range(4)]
    teacher = [] if rank == 0 else [v[3]]
    return cosmos_distillation_loss(v[:1], v[1:2], [v[2]], teacher, 5.0)


def fsc_clip_missing_tokens(rank: int) -> Any:
    # FSC-CLIP's local term needs token arguments: rank 0 forgets them.
    from vlp.losses import fsc_clip_loss

    x, t = _features(rank, 3, 4), _features(rank + 2, 3, 4)
    negatives = _features(rank + 4, 6, 4).reshape(3, 2, 4)
    mask = torch.ones(3, 2, dtype=torch.bool)
    return fsc_clip_loss(x, t, negatives, mask, 5.0, lambda_local=(0.2, 0.0)[rank])


def bank_enqueue_width(rank: int) -> Any:
    from vlp.losses import TeacherMemoryBank

    bank = TeacherMemoryBank(8, 4, init="empty", dtype=F64)
    bank.enqueue(_features(rank, 2, (4, 3)[rank]))
    return len(bank)


def bank_enqueue_uneven(rank: int) -> Any:
    from vlp.losses import TeacherMemoryBank

    bank = TeacherMemoryBank(8, 4, init="empty", dtype=F64)
    bank.enqueue(_features(rank, (0, 3)[rank], 4))
    return bank.negatives()


def clip_local_only_on_one_rank(rank: int) -> Any:
    # Validation on rank 0 alone, inside the job: no collective, rank 1 never calls.
    if rank == 0:
        return clip_loss(_features(rank, 3, 4), _features(rank + 2, 3, 4), 5.0, group=False)
    return None


CASES: dict[str, Callable[[int], Any]] = {
    "clip_dim": clip_dim,
    "siglip_dim": siglip_dim,
    "distill_dim": distill_dim,
    "clip_dtype": clip_dtype,
    "clip_scale_grad": clip_scale_grad,
    "clip_sample_ids_one_rank": clip_sample_ids_one_rank,
    "clip_nan": clip_nan,
    "siglip_bad_scale": siglip_bad_scale,
    "clip_all_empty": clip_all_empty,
    "negclip_negatives": negclip_negatives,
    "multiview_views": multiview_views,
    "cosmos_empty_teacher_list": cosmos_empty_teacher_list,
    "fsc_clip_missing_tokens": fsc_clip_missing_tokens,
    "bank_enqueue_width": bank_enqueue_width,
    "bank_enqueue_uneven": bank_enqueue_uneven,
    "clip_local_only_on_one_rank": clip_local_only_on_one_rank,
    "gather_trailing_dim": gather_trailing_dim,
    "gather_trailing_rank": gather_trailing_rank,
    "gather_dtype": gather_dtype,
    "sizes_with_failure": sizes_with_failure,
    "sizes_with_facts": sizes_with_facts,
    "sizes_different_callers": sizes_different_callers,
    "gather_local_only": gather_local_only,
    "healthy_after_faults": healthy_after_faults,
}


# ------------------------------------------------------------------ empty local batches

EMPTY_ROWS = 5  # rank 0 holds none of them, rank 1 all


def empty_inputs() -> list[torch.Tensor]:
    """Five global ``(5, 4)`` tensors and hard negatives ``(5, 2, 4)``."""
    g = torch.Generator().manual_seed(9)
    out = [torch.randn(EMPTY_ROWS, 4, generator=g, dtype=F64) for _ in range(5)]
    return [*out, torch.randn(EMPTY_ROWS, 2, 4, generator=g, dtype=F64)]


EMPTY_LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "clip": lambda x, t, *_: clip_loss(x, t, 5.0),
    "clip_tiled": lambda x, t, *_: clip_loss(x, t, 5.0, chunk_size=2, logit_bias=-0.5),
    "clip_global_rows": lambda x, t, *_: clip_loss(x, t, 5.0, local_loss=False),
    "siglip": lambda x, t, *_: siglip_loss(x, t, 5.0, -1.0),
    "siglip_chunked": lambda x, t, *_: siglip_loss(x, t, 5.0, -1.0, chunk_size=2),
    "negclip": lambda x, t, a, b, c, n: negclip_loss(x, t, n, None, 5.0),
    "multiview": lambda x, t, a, *_: multiview_clip_loss([x, a], [t], 5.0),
    "cosmos": lambda x, t, a, b, *_: cosmos_distillation_loss([x], [t], [a], [b], 5.0),
    "distill": lambda x, t, a, b, *_: contrastive_distillation_loss(
        x, t, a, b[:3], 5.0, local_targets=False
    ),
}


def empty_step(name: str, rows: slice, **kwargs: Any) -> dict[str, Any]:
    """One forward/backward of ``EMPTY_LOSSES[name]`` on ``rows`` of every input."""
    inputs = [x[rows].clone().requires_grad_() for x in empty_inputs()]
    if name == "distill":  # the bank is not per-row: every rank passes the same one
        inputs[3] = empty_inputs()[3].clone()
    loss = EMPTY_LOSSES[name](*inputs, **kwargs)
    loss.backward()
    return {"loss": loss.detach(), "grads": [x.grad for x in inputs]}


def _empty_cases(rank: int) -> dict[str, Any]:
    rows = slice(0, 0) if rank == 0 else slice(0, EMPTY_ROWS)
    return {name: _run(lambda r, n=name: empty_step(n, rows), rank) for name in EMPTY_LOSSES}


def _run(fn: Callable[[int], Any], rank: int) -> dict[str, Any]:
    start = time.monotonic()
    try:
        value = fn(rank)
    except Exception as err:  # recorded for the test to judge
        return {
            "error": type(err).__name__,
            "is_value_error": isinstance(err, ValueError),
            "message": str(err),
            "seconds": time.monotonic() - start,
        }
    return {"value": value, "seconds": time.monotonic() - start}


def _worker(rank: int, world: int) -> dict[str, Any]:
    return {
        "faults": {name: _run(fn, rank) for name, fn in CASES.items()},
        "empty": _empty_cases(rank),
    }


@functools.cache
def fault_results() -> list[dict[str, Any]]:
    """Per-rank outcome of every fault case (computed once per session)."""
    return run_distributed(_worker, timeout=TIMEOUT)
