"""2-process gloo cases for training at scale: FSDP2 and gradient caching, one spawn.

``scale_results()`` runs every case once per test session; the test files compare the
per-rank results with one process on the concatenated batch, computed by the same
functions here (without a process group).
"""

from __future__ import annotations

import copy
import functools
import math
from typing import Any

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from vlp.distributed import get_rank, get_world_size, is_distributed
from vlp.heads import EMATeacher, FrozenTeacher
from vlp.losses import ClipLoss, GradCache, TeacherMemoryBank, clip_loss
from vlp.testing import run_distributed

F64 = torch.float64

# ------------------------------------------------------------------------------- FSDP2

FSDP_WORLD = 2
FSDP_ROWS = 4  # per rank; the global batch is 8
FSDP_STEPS = 3
FSDP_CONFIG: dict[str, Any] = {
    "embed_dim": 8,
    "vision_cfg": {"image_size": 16, "layers": 2, "width": 16, "patch_size": 8, "head_width": 8},
    "text_cfg": {"context_length": 6, "vocab_size": 20, "width": 16, "heads": 2, "layers": 1},
}


def tiny_clip() -> nn.Module:
    """A tiny open_clip CLIP, random init, identical in every process."""
    import open_clip

    torch.manual_seed(0)
    return open_clip.CLIP(**FSDP_CONFIG).double()


def fsdp_batches() -> list[tuple[torch.Tensor, torch.Tensor]]:
    """One global batch per step: images ``(8, 3, 16, 16)`` and token ids ``(8, 6)``."""
    g = torch.Generator().manual_seed(3)
    rows = FSDP_WORLD * FSDP_ROWS
    return [
        (
            torch.randn(rows, 3, 16, 16, generator=g, dtype=F64),
            torch.randint(1, 20, (rows, 6), generator=g),
        )
        for _ in range(FSDP_STEPS)
    ]


def shard_clip(model: nn.Module, *, reshard_after_forward: bool | None = None) -> None:
    """``fully_shard`` each vision block, then the root (the 0-dim open_clip scale stays whole)."""
    from torch.distributed.fsdp import fully_shard

    for block in model.visual.transformer.resblocks:
        fully_shard(block)
    kwargs = {}
    if reshard_after_forward is not None:
        kwargs["reshard_after_forward"] = reshard_after_forward
    fully_shard(model, ignored_params={model.logit_scale}, **kwargs)


def full(tensor: torch.Tensor) -> torch.Tensor:
    """The whole value of a parameter, gathered if it is a DTensor shard."""
    from torch.distributed.tensor import DTensor

    value = tensor.full_tensor() if isinstance(tensor, DTensor) else tensor
    return value.detach().clone()


def fsdp_train(rows: slice, sharded: bool) -> dict[str, Any]:
    """Three SGD steps of CLIP + distillation from an EMA teacher of the student.

    The loss is ``ClipLoss`` (learnable scale) plus the squared distance of the student's
    unit image features to the sharded EMA teacher's; a second, whole EMA teacher is only
    updated. With ``sharded`` the student and the first teacher are ``fully_shard``-ed.
    """
    model = tiny_clip()
    teacher_sharded = EMATeacher(model, momentum=0.8)
    teacher_whole = EMATeacher(model, momentum=0.7)
    if sharded:
        shard_clip(model)
        shard_clip(teacher_sharded.module, reshard_after_forward=True)
    loss_fn = ClipLoss(dtype=F64)
    opt = torch.optim.SGD([*model.parameters(), *loss_fn.parameters()], lr=0.1, momentum=0.9)
    losses = []
    for images, tokens in fsdp_batches():
        x, t = images[rows], tokens[rows]
        image, text, _ = model(x, t)
        teacher_image, _, _ = teacher_sharded(x, t)
        distill = (F.normalize(image, dim=-1) - F.normalize(teacher_image, dim=-1)).pow(2)
        loss = loss_fn(image, text) + distill.sum(-1).mean()
        opt.zero_grad()
        loss.backward()
        teacher_sharded.update(model)  # COSMOS order: before the optimiser step
        teacher_whole.update(model)
        opt.step()
        loss_fn.clamp_()
        losses.append(loss.detach())
    return {
        "student": {n: full(p) for n, p in model.named_parameters()},
        "teacher_sharded": {n: full(p) for n, p in teacher_sharded.module.named_parameters()},
        "teacher_whole": {n: full(p) for n, p in teacher_whole.module.named_parameters()},
        "log_scale": loss_fn.logit_scale.log_scale.detach().clone(),
        "losses": torch.stack(losses),
        "student_sharded": sharded and type(next(model.parameters())).__name__ == "DTensor",
    }


def fsdp_grad_cache(rows: slice, sharded: bool) -> dict[str, torch.Tensor]:
    """Gradients of one GradCache step (micro-batch 2) of the tiny CLIP with ClipLoss.

    The encoders go through the model's ``forward`` (``model(image=x)``) so that FSDP2's
    hooks gather and reduce-scatter around every micro-batch.
    """
    model = tiny_clip()
    if sharded:
        shard_clip(model)
    loss_fn = ClipLoss(dtype=F64)
    images, tokens = fsdp_batches()[0]
    GradCache(loss_fn).step(
        lambda x: model(image=x)[0], lambda t: model(text=t)[1], images[rows], tokens[rows],
        micro_batch=2,
    )  # fmt: skip
    grads = {n: full(p.grad) for n, p in model.named_parameters() if p.grad is not None}
    assert loss_fn.logit_scale.log_scale.grad is not None
    grads["loss.log_scale"] = loss_fn.logit_scale.log_scale.grad.clone()
    return grads


def _fsdp_frozen_and_bank(rank: int) -> dict[str, Any]:
    """A sharded FrozenTeacher, and a TeacherMemoryBank inside a sharded parent."""
    from torch.distributed.fsdp import fully_shard

    torch.manual_seed(5)
    body = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.Linear(6, 3)).double()
    whole = FrozenTeacher(body)
    sharded = FrozenTeacher(copy.deepcopy(body))
    # Never trained, so never resharded by a backward: reshard after each forward.
    fully_shard(sharded.model, reshard_after_forward=True)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(6 + rank), dtype=F64)
    parent = nn.Module()
    parent.proj = nn.Linear(3, 3, dtype=F64)
    parent.bank = TeacherMemoryBank(7, 3, init="empty", dtype=F64)
    fully_shard(parent)
    parent.bank.enqueue(whole(x))
    return {
        "frozen_equal": torch.equal(sharded(x), whole(x)),
        "frozen_is_dtensor": type(next(sharded.model.parameters())).__name__ == "DTensor",
        "bank": parent.bank.negatives().clone(),
        "bank_rows": whole(x),
    }


# ----------------------------------------------------------------------------- GradCache

CACHE_SIZES = (4, 7)  # uneven on purpose
CACHE_MICRO = 3


class CacheTowers(nn.Module):
    """Image and text MLP towers with dropout."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.image = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 5))
        self.text = nn.Sequential(nn.Linear(7, 8), nn.Tanh(), nn.Dropout(0.3), nn.Linear(8, 5))
        self.double()


def cache_batch() -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    n = sum(CACHE_SIZES)
    return torch.randn(n, 6, generator=g, dtype=F64), torch.randn(n, 7, generator=g, dtype=F64)


CACHE_LOSSES: dict[str, dict[str, Any]] = {
    "dense": {},
    "tiled": {"chunk_size": 3},
    "global_rows": {"local_loss": False},
}


def cache_loss_fn(config: dict[str, Any]) -> ClipLoss | Any:
    if not config:
        return ClipLoss(dtype=F64)
    return functools.partial(clip_loss, logit_scale=math.exp(1.5), **config)


def _cache_cases(rank: int) -> dict[str, Any]:
    x, t = cache_batch()
    start = sum(CACHE_SIZES[:rank])
    rows = slice(start, start + CACHE_SIZES[rank])
    out = {}
    for name, config in CACHE_LOSSES.items():
        towers = CacheTowers()
        loss_fn = cache_loss_fn(config)
        torch.manual_seed(11 + rank)  # each rank its own dropout masks
        loss = GradCache(loss_fn).step(
            towers.image, towers.text, x[rows], t[rows], micro_batch=CACHE_MICRO
        )
        # Plain data parallelism without a DDP wrapper: average the gradients.
        for p in towers.parameters():
            assert p.grad is not None
            dist.all_reduce(p.grad)
            p.grad /= get_world_size()
        out[name] = {
            "loss": loss,
            "grads": {
                n: p.grad.clone() for n, p in towers.named_parameters() if p.grad is not None
            },
            "scale": None
            if not isinstance(loss_fn, ClipLoss)
            else loss_fn.logit_scale.log_scale.grad.clone(),
            "masks_seed": 11 + rank,
        }
    return out


def _worker(rank: int, world: int) -> dict[str, Any]:
    assert is_distributed() and get_rank() == rank
    torch.manual_seed(0)
    return {
        "fsdp": fsdp_train(slice(rank * FSDP_ROWS, (rank + 1) * FSDP_ROWS), sharded=True),
        "fsdp_frozen_bank": _fsdp_frozen_and_bank(rank),
        "fsdp_grad_cache": fsdp_grad_cache(
            slice(rank * FSDP_ROWS, (rank + 1) * FSDP_ROWS), sharded=True
        ),
        "cache": _cache_cases(rank),
    }


@functools.cache
def scale_results() -> list[dict[str, Any]]:
    """Per-rank results of every case (computed once per session)."""
    return run_distributed(_worker, world_size=FSDP_WORLD)
