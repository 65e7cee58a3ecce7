"""Learning-rate schedule and AdamW parameter groups as CLIP-style training uses them.

Two small pieces that every recipe needs and that are easy to get subtly wrong:

- :func:`warmup_cosine`: the multiplier of a linear warm-up followed by a cosine decay to
  zero (open_clip's ``cosine_lr``, SLIP, FSC-CLIP, COSMOS); :func:`warmup_cosine_scheduler`
  wraps it in a ``torch.optim.lr_scheduler.LambdaLR``.
- :func:`param_groups`: two AdamW groups, with weight decay only on the matrices of a model
  and none on gains, biases, temperatures and embeddings (CLIP, Radford et al. 2021,
  appendix; open_clip's ``exclude`` rule).

Plain functions over ``torch.optim``: no optimizer or trainer class.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn

from vlp._checks import check_float, check_int

__all__ = ["NO_DECAY_NAMES", "param_groups", "warmup_cosine", "warmup_cosine_scheduler"]

#: Name fragments of parameters that get no weight decay whatever their shape: token,
#: class and positional embeddings (open_clip's ``token_embedding``,
#: ``positional_embedding``, ``class_embedding``).
NO_DECAY_NAMES: tuple[str, ...] = ("embedding", "positional")


def _check_schedule(warmup_steps: int, total_steps: int) -> None:
    check_int("warmup_steps", warmup_steps, low=0)
    check_int("total_steps", total_steps, low=1)


def warmup_cosine(step: int, *, warmup_steps: int, total_steps: int) -> float:
    r"""Learning-rate multiplier: linear warm-up, then cosine decay to zero.

    $$f(t) = \begin{cases} \frac{t + 1}{W} & t < W \\
    \frac12\Big(1 + \cos\big(\pi \frac{t - W}{\max(1, T - W)}\big)\Big) & t \ge W\end{cases}$$

    for step ``t`` counted from 0 (the multiplier of the ``t``-th optimizer step), ``W``
    warm-up steps and ``T`` total steps: the first step already trains at ``1/W`` of the
    peak, the peak is reached at step ``W - 1``, and ``f(T) = 0``. Steps past ``T`` continue
    the cosine (rising again), as a plain cosine would; stop at ``T``.

    Args:
        step: optimizer step, ``>= 0``.
        warmup_steps: ``W >= 0`` (0: start at the peak).
        total_steps: ``T >= 1``.

    Returns:
        The multiplier in ``[0, 1]`` for ``step <= total_steps``.

    Raises:
        TypeError, ValueError: a non-int or negative step, ``warmup_steps < 0`` or
            ``total_steps < 1``.
    """
    check_int("step", step, low=0)
    _check_schedule(warmup_steps, total_steps)
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, total_steps - warmup_steps)
    return 0.5 * (1 + math.cos(math.pi * progress))


def warmup_cosine_scheduler(
    optimizer: torch.optim.Optimizer, *, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """A ``LambdaLR`` that multiplies every group's learning rate by :func:`warmup_cosine`.

    Call ``scheduler.step()`` after each ``optimizer.step()``; the first optimizer step uses
    ``lr / warmup_steps`` (``lr`` with no warm-up).

    Args:
        optimizer: the optimizer whose groups' ``lr`` is the peak learning rate.
        warmup_steps: linear warm-up steps (``>= 0``).
        total_steps: steps until the rate reaches zero (``>= 1``).

    Returns:
        The scheduler.
    """
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"optimizer must be a torch.optim.Optimizer, got {type(optimizer).__name__}"
        )
    _check_schedule(warmup_steps, total_steps)
    return torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: warmup_cosine(step, warmup_steps=warmup_steps, total_steps=total_steps),
    )


def param_groups(
    *sources: nn.Module | Iterable[tuple[str, torch.Tensor]],
    weight_decay: float,
    no_decay_names: Sequence[str] = NO_DECAY_NAMES,
) -> list[dict[str, Any]]:
    """AdamW parameter groups: weight decay on matrices, none on the rest.

    A parameter gets no decay when it has fewer than 2 dimensions (biases, LayerNorm gains,
    logit scales and biases) or its name contains one of ``no_decay_names``. Parameters
    with ``requires_grad=False`` are left out, and a parameter reached twice (shared, or
    passed in two sources) is listed once.

    Args:
        *sources: modules (their ``named_parameters()``) or iterables of ``(name,
            parameter)`` pairs, e.g. ``model.named_parameters()``.
        weight_decay: the decay of the first group (``>= 0``).
        no_decay_names: name fragments that exclude a parameter of any shape; ``()`` to
            exclude by shape only.

    Returns:
        ``[{"params": decay, "weight_decay": weight_decay}, {"params": no_decay,
        "weight_decay": 0.0}]``, for ``torch.optim.AdamW(groups, lr=...)``; an empty group
        is left out.

    Raises:
        TypeError: a source that is neither a module nor ``(name, tensor)`` pairs.
        ValueError: a negative ``weight_decay``, or no trainable parameter at all.

    Example:
        >>> model = nn.ModuleDict({"token_embedding": nn.Embedding(10, 4), "proj": nn.Linear(4, 2)})
        >>> groups = param_groups(model, weight_decay=0.1)
        >>> [len(g["params"]) for g in groups]  # proj.weight | token_embedding, proj.bias
        [1, 2]
    """
    check_float("weight_decay", weight_decay, low=0.0)
    if isinstance(no_decay_names, str):
        raise TypeError("no_decay_names must be a sequence of strings, not a str")
    if not isinstance(no_decay_names, Iterable) or not all(
        isinstance(n, str) for n in no_decay_names
    ):
        raise TypeError(f"no_decay_names must be a sequence of strings, got {no_decay_names!r:.80}")
    decay: list[torch.Tensor] = []
    no_decay: list[torch.Tensor] = []
    seen: set[int] = set()
    for i, source in enumerate(sources):
        pairs = source.named_parameters() if isinstance(source, nn.Module) else source
        for pair in pairs:
            if not (
                isinstance(pair, tuple)
                and len(pair) == 2
                and isinstance(pair[0], str)
                and isinstance(pair[1], torch.Tensor)
            ):
                raise TypeError(
                    f"sources[{i}] must be an nn.Module or (name, parameter) pairs, got an "
                    f"item of type {type(pair).__name__}"
                )
            name, p = pair
            if not p.requires_grad or id(p) in seen:
                continue
            seen.add(id(p))
            excluded = p.ndim < 2 or any(fragment in name for fragment in no_decay_names)
            (no_decay if excluded else decay).append(p)
    if not decay and not no_decay:
        raise ValueError("sources hold no parameter that requires grad")
    groups = [
        {"params": decay, "weight_decay": float(weight_decay)},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return [g for g in groups if g["params"]]
