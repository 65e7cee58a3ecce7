"""Every 2-process gloo case of the distributed, CLIP and SigLIP tests, run in one spawn.

Spawning processes that import torch dominates the cost of these tests, so one worker
runs all the cases once per test session (``gloo_results`` is cached) and the test
files compare its per-rank results with one process on the concatenated batch. This
module imports only torch and vlp, to keep the children's start-up short.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from vlp.distributed import (
    all_gather_no_grad,
    all_gather_sizes,
    all_gather_with_grad,
    average_gradient,
    get_rank,
    get_world_size,
    is_distributed,
)
from vlp.losses import (
    clip_loss,
    cosmos_distillation_loss,
    multiview_clip_loss,
    negclip_loss,
    siglip_loss,
)
from vlp.testing import run_distributed

F64 = torch.float64

# ------------------------------------------------------------------------------ gathers

GATHER_SIZES = (3, 5)
GATHER_DIM = 4


def gather_data() -> tuple[torch.Tensor, torch.Tensor]:
    """The global tensor and one weight tensor per rank for the gather cases."""
    g = torch.Generator().manual_seed(0)
    n = sum(GATHER_SIZES)
    full = torch.randn(n, GATHER_DIM, generator=g, dtype=F64)
    weights = torch.randn(len(GATHER_SIZES), n, GATHER_DIM, generator=g, dtype=F64)
    return full, weights


def gather_loss(rank: int, x_local: torch.Tensor, gathered: torch.Tensor) -> torch.Tensor:
    """A rank-specific nonlinear loss of the gathered tensor plus a local-only term."""
    _, weights = gather_data()
    return (weights[rank] * gathered**2).sum() + (x_local**3).sum()


def _gather_cases(rank: int, world: int) -> dict[str, Any]:
    out: dict[str, Any] = {
        "rank": get_rank(),
        "world": get_world_size(),
        "is_distributed": is_distributed(),
    }
    full, _ = gather_data()
    start = sum(GATHER_SIZES[:rank])
    x = full[start : start + GATHER_SIZES[rank]].clone().requires_grad_()
    group = dist.new_group(ranks=list(range(world)))
    y = all_gather_with_grad(x, group)
    gather_loss(rank, x, y).backward()
    out["gathered"] = y.detach()
    out["grad"] = x.grad
    out["sizes"] = all_gather_sizes(x, group)
    out["no_grad"] = all_gather_no_grad(x, group, sizes=list(GATHER_SIZES))
    out["no_grad_requires_grad"] = out["no_grad"].requires_grad

    # A rank holding no rows.
    z = torch.full(((0, 4)[rank], 2), float(rank + 1), requires_grad=True)
    zz = all_gather_with_grad(z)
    (zz * (rank + 1)).sum().backward()
    out["empty_gathered"] = zz.detach()
    out["empty_grad"] = z.grad

    # A shared scalar whose gradient differs per rank is averaged.
    s = torch.tensor(2.0, dtype=F64, requires_grad=True)
    (average_gradient(s) * (rank + 1) * 3.0).backward()
    out["scalar_grad"] = s.grad

    try:
        all_gather_with_grad(x, sizes=[1])
    except ValueError as err:
        out["bad_sizes"] = str(err)
    return out


# ------------------------------------------------------------------------------- losses

LOSS_SIZES = (4, 5)  # uneven on purpose
IDS = [0, 1, 1, 2, 2, 3, 3, 4, 5]  # id 2 straddles the two ranks
LOSS_CASES: list[tuple[str, dict[str, Any]]] = [
    ("clip", {}),
    ("clip", {"sample_ids": True, "label_smoothing": 0.1, "logit_bias": -1.0}),
    ("clip", {"local_loss": False}),
    ("clip", {"local_loss": False, "sample_ids": True}),
    ("clip", {"local_loss": False, "gather_with_grad": False}),
    ("clip", {"local_loss": True, "gather_with_grad": False}),
    # The tiled path (never forms the logits) under the same distributed semantics.
    ("clip", {"chunk_size": 2, "sample_ids": True, "label_smoothing": 0.1, "logit_bias": -1.0}),
    ("clip", {"chunk_size": 4, "local_loss": False, "sample_ids": True, "logit_bias": 0.5}),
    ("siglip", {"chunk_size": None}),
    ("siglip", {"chunk_size": 2}),
    ("siglip", {"chunk_size": 3, "sample_ids": True}),
    ("siglip", {"local_loss": False, "sample_ids": True}),
    ("siglip", {"local_loss": False, "gather_with_grad": False}),
    ("siglip", {"local_loss": True, "gather_with_grad": False, "chunk_size": 2}),
    # NegCLIP: every image meets every rank's hard negatives (see negclip_inputs).
    ("negclip", {}),
    ("negclip", {"missing": "mask"}),
    ("negclip", {"local_loss": False}),
    ("negclip", {"local_loss": False, "gather_with_grad": False}),
    ("negclip", {"local_loss": True, "gather_with_grad": False}),
    ("negclip", {"chunk_size": 2, "missing": "mask"}),
    ("negclip", {"chunk_size": 3, "local_loss": False}),
]


class Towers(nn.Module):
    """Two linear towers, identically initialised in every process."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.image = nn.Linear(6, 5, dtype=F64)
        self.text = nn.Linear(7, 5, dtype=F64)

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.image(x), self.text(t)


def loss_batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The global batch: image inputs, text inputs and sample ids."""
    g = torch.Generator().manual_seed(1)
    n = sum(LOSS_SIZES)
    return (
        torch.randn(n, 6, generator=g, dtype=F64),
        torch.randn(n, 7, generator=g, dtype=F64),
        torch.tensor(IDS),
    )


def negclip_inputs(t: torch.Tensor, ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Two hard-negative text inputs per caption, ``(n, 2, 7)``, and their ``(n, 2)`` mask."""
    negatives = torch.stack([t.roll(1, dims=1), -t], dim=1)
    mask = torch.stack([ids % 2 == 0, ids % 3 != 1], dim=1)
    return negatives, mask


def loss_step(
    model: nn.Module,
    x: torch.Tensor,
    t: torch.Tensor,
    ids: torch.Tensor,
    name: str,
    config: dict[str, Any],
) -> dict[str, Any]:
    """One forward/backward; the scale and bias live outside the (DDP) model."""
    model.zero_grad()
    log_scale = torch.tensor(math.log(8.0), dtype=F64, requires_grad=True)
    bias = torch.tensor(-2.0, dtype=F64, requires_grad=True)
    kwargs = dict(config)
    if kwargs.pop("sample_ids", False):
        kwargs["sample_ids"] = ids
    if name == "negclip":
        # One forward for captions and negatives (DDP allows one forward per backward).
        negative_inputs, negative_mask = negclip_inputs(t, ids)
        image, texts = model(x, torch.cat([t, negative_inputs.flatten(0, 1)]))
        text, negatives = texts[: len(t)], texts[len(t) :].unflatten(0, (len(t), 2))
        loss = negclip_loss(image, text, negatives, negative_mask, log_scale.exp(), **kwargs)
    elif name == "clip":
        image, text = model(x, t)
        loss = clip_loss(image, text, log_scale.exp(), **kwargs)
    else:
        image, text = model(x, t)
        loss = siglip_loss(image, text, log_scale.exp(), bias, **kwargs)
    loss.backward()
    grads = {
        n.removeprefix("module."): p.grad.clone()
        for n, p in model.named_parameters()
        if p.grad is not None
    }
    return {"loss": loss.detach(), "grads": grads, "scale": log_scale.grad, "bias": bias.grad}


def _loss_cases(rank: int) -> list[dict[str, Any]]:
    x, t, ids = loss_batch()
    start = sum(LOSS_SIZES[:rank])
    rows = slice(start, start + LOSS_SIZES[rank])
    model = nn.parallel.DistributedDataParallel(Towers())
    return [loss_step(model, x[rows], t[rows], ids[rows], n, c) for n, c in LOSS_CASES]


# ------------------------------------------------------------------------------ S-SMKE

SSMKE_SIZES = (3, 5)  # uneven on purpose
SSMKE_BANK_SIZE = 7  # not a multiple of the global batch: every enqueue wraps differently


def ssmke_data() -> tuple[
    list[torch.Tensor], torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor
]:
    """Global batches to enqueue, student image/text features, teacher targets, a bank."""
    from vlp.losses import TeacherMemoryBank  # noqa: F401  (imported here for the children)

    g = torch.Generator().manual_seed(2)
    n, d = sum(SSMKE_SIZES), 4
    steps = [torch.randn(n, d, generator=g, dtype=F64) for _ in range(3)]
    s_img, s_txt, teacher = (torch.randn(n, d, generator=g, dtype=F64) for _ in range(3))
    bank = torch.nn.functional.normalize(torch.randn(6, d, generator=g, dtype=F64), dim=-1)
    return steps, s_img, s_txt, teacher, bank


class _StudentWithTeacher(nn.Module):
    """A student regressing a frozen, stochastic-when-training teacher (dropout + BN)."""

    def __init__(self) -> None:
        from vlp.heads import FrozenTeacher

        super().__init__()
        self.student = nn.Linear(4, 3, dtype=F64)
        body = nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5), nn.BatchNorm1d(3)).double()
        self.teacher = FrozenTeacher(body)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        target = self.teacher(x)
        return ((self.student(x) - target) ** 2).sum(), target


def _ssmke_ddp_case(rank: int) -> dict[str, Any]:
    """A FrozenTeacher inside a DDP-wrapped parent in train mode, two SGD steps."""
    torch.manual_seed(0)
    parent = _StudentWithTeacher()
    teacher_state = {k: v.clone() for k, v in parent.teacher.state_dict().items()}
    ddp = nn.parallel.DistributedDataParallel(parent)  # find_unused_parameters=False
    ddp.train()
    opt = torch.optim.SGD(ddp.parameters(), lr=0.1)
    x = torch.randn(5, 4, generator=torch.Generator().manual_seed(10 + rank), dtype=F64)
    targets = []
    for _ in range(2):
        loss, target = ddp(x)
        opt.zero_grad()
        loss.backward()
        opt.step()
        targets.append(target)
    return {
        "ddp_student": parent.student.weight.detach().clone(),
        "ddp_teacher_unchanged": all(
            torch.equal(v, teacher_state[k]) for k, v in parent.teacher.state_dict().items()
        ),
        "ddp_targets_equal": torch.equal(targets[0], targets[1]),
        "ddp_teacher_eval": not any(m.training for m in parent.teacher.model.modules()),
    }


def _ssmke_cases(rank: int) -> dict[str, Any]:
    from vlp.losses import TeacherMemoryBank, contrastive_distillation_loss

    steps, s_img, s_txt, teacher, bank = ssmke_data()
    start = sum(SSMKE_SIZES[:rank])
    rows = slice(start, start + SSMKE_SIZES[rank])
    memory = TeacherMemoryBank(SSMKE_BANK_SIZE, steps[0].shape[1], init="empty", dtype=F64)
    for batch in steps:
        memory.enqueue(batch[rows])
    image = s_img[rows].clone().requires_grad_()
    text = s_txt[rows].clone().requires_grad_()
    out = contrastive_distillation_loss(
        image, text, teacher[rows], bank, 4.0, local_targets=False, return_details=True
    )
    out.loss.backward()
    local = contrastive_distillation_loss(image, text, teacher[rows], bank, 4.0)
    # The tiled path, and every rank computing the whole global loss.
    tiled = contrastive_distillation_loss(
        image, text, teacher[rows], bank, 4.0, local_targets=False, chunk_size=2
    )
    image_all = s_img[rows].clone().requires_grad_()
    everything = contrastive_distillation_loss(
        image_all, text.detach(), teacher[rows], bank, 4.0, local_targets=False, local_loss=False
    )
    everything.backward()
    return {
        **_ssmke_ddp_case(rank),
        "bank": memory.bank.clone(),
        "pointer": int(memory.pointer),
        "filled": len(memory),
        "loss": out.loss.detach(),
        "labels": out.labels,
        "grad_image": image.grad,
        "grad_text": text.grad,
        "local_loss": local.detach(),
        "tiled": tiled.detach(),
        "global": everything.detach(),
        "grad_image_global": image_all.grad,
    }


# ------------------------------------------------------------------------------ COSMOS

MULTIVIEW_SIZES = (2, 3)  # uneven on purpose
# (case, keyword arguments); `multiview_lists` gives each case's views.
MULTIVIEW_CASES: list[tuple[str, dict[str, Any]]] = [
    ("multiview", {}),
    ("multiview", {"local_loss": False}),
    ("multiview", {"local_loss": False, "gather_with_grad": False}),
    ("multiview", {"local_loss": True, "gather_with_grad": False}),
    ("multiview", {"chunk_size": 2, "label_smoothing": 0.1}),
    ("multiview_shared", {}),  # a view in both lists: gathered once
    ("distillation", {}),  # teacher view 0 in both teacher lists: gathered once
    ("distillation", {"local_loss": False, "chunk_size": 3}),
]


def multiview_data() -> list[torch.Tensor]:
    """Seven global ``(M, 4)`` views; each case picks its lists from them."""
    g = torch.Generator().manual_seed(4)
    return [torch.randn(sum(MULTIVIEW_SIZES), 4, generator=g, dtype=F64) for _ in range(7)]


def multiview_lists(name: str, views: list[torch.Tensor]) -> list[list[torch.Tensor]]:
    """The view lists of a case (the same tensor object where a view is shared)."""
    if name == "multiview":  # 2 x 3 views, 5 distinct
        return [views[:2], views[2:5]]
    if name == "multiview_shared":  # 2 x 3 views, 4 distinct
        return [views[:2], [views[1], *views[2:4]]]
    # distillation: student 2 image + 3 text, teacher [t0] and [t0, t1]: 7 distinct
    return [views[:2], views[2:5], [views[5]], [views[5], views[6]]]


def pairwise_reference(
    name: str, lists: list[list[torch.Tensor]], scale: torch.Tensor, **config: Any
) -> torch.Tensor:
    """The loss as one ``clip_loss`` call per pair of views (gathers every pair anew)."""

    def mean(a: list[torch.Tensor], b: list[torch.Tensor]) -> torch.Tensor:
        total = torch.zeros((), dtype=F64)
        for x in a:
            for y in b:
                total = total + clip_loss(x, y, scale, **config)
        return total / (len(a) * len(b))

    if name.startswith("multiview"):
        return mean(*lists)
    student_image, student_text, *teachers = lists
    detached = [[t.detach() for t in views] for views in teachers]
    groups = [mean(s, t) for s in (student_image, student_text) for t in detached]
    return (groups[0] + groups[1] + groups[2] + groups[3]) / 4


def multiview_loss(
    name: str, lists: list[list[torch.Tensor]], scale: torch.Tensor, **config: Any
) -> torch.Tensor:
    """The library call of a case."""
    if name.startswith("multiview"):
        return multiview_clip_loss(*lists, scale, **config)
    return cosmos_distillation_loss(*lists, scale, **config)


@contextlib.contextmanager
def count_collectives() -> Iterator[dict[str, int]]:
    """Count the calls of ``dist.all_gather`` and ``dist.all_reduce`` inside the block."""
    counts = {"all_gather": 0, "all_reduce": 0}
    originals = {name: getattr(dist, name) for name in counts}

    def counted(name: str) -> Callable[..., Any]:
        def call(*args: Any, **kwargs: Any) -> Any:
            counts[name] += 1
            return originals[name](*args, **kwargs)

        return call

    try:
        for name in counts:
            setattr(dist, name, counted(name))
        yield counts
    finally:
        for name, original in originals.items():
            setattr(dist, name, original)


def multiview_step(
    fn: Callable[..., torch.Tensor],
    name: str,
    config: dict[str, Any],
    rows: slice,
) -> dict[str, Any]:
    """One forward/backward of ``fn`` on this rank's rows, with its collective counts."""
    views = [v[rows].clone().requires_grad_() for v in multiview_data()]
    log_scale = torch.tensor(math.log(6.0), dtype=F64, requires_grad=True)
    with count_collectives() as counts:
        loss = fn(name, multiview_lists(name, views), log_scale.exp(), **config)
        forward = dict(counts)
        loss.backward()
    return {
        "loss": loss.detach(),
        "grads": [v.grad for v in views],
        "scale": log_scale.grad,
        "forward": forward,
        "backward": {k: counts[k] - forward[k] for k in counts},
    }


def _multiview_cases(rank: int) -> list[dict[str, Any]]:
    start = sum(MULTIVIEW_SIZES[:rank])
    rows = slice(start, start + MULTIVIEW_SIZES[rank])
    return [
        {
            "library": multiview_step(multiview_loss, name, config, rows),
            "pairwise": multiview_step(pairwise_reference, name, config, rows),
        }
        for name, config in MULTIVIEW_CASES
    ]


def _worker(rank: int, world: int) -> dict[str, Any]:
    return {
        "gather": _gather_cases(rank, world),
        "losses": _loss_cases(rank),
        "multiview": _multiview_cases(rank),
        "ssmke": _ssmke_cases(rank),
    }


@functools.cache
def gloo_results() -> list[dict[str, Any]]:
    """Per-rank results of every case (computed once per session)."""
    return run_distributed(_worker)
