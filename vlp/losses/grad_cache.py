"""Gradient caching: a contrastive loss over a batch far larger than the activations that fit.

Reference: Gao et al., "Scaling Deep Contrastive Learning Batch Size under Memory Limited
Setup", RepL4NLP 2021 (Algorithm 1); the technique behind open_clip's ``--accum-freq``
and the gradient caching Inf-CL pairs with its tiled loss.

A contrastive loss couples every row of the batch, so ordinary gradient accumulation
(summing the gradients of independent micro-batch losses) changes the loss. Gradient
caching keeps the loss exact by splitting the backward at the features:

1. encode every micro-batch **without a graph** and concatenate the ``(B, D)`` features;
2. compute the loss on the whole batch from detached copies of the features and
   back-propagate it to them (this also fills the gradients of the loss's own
   parameters, e.g. a learnable logit scale): the ``(B, D)`` feature gradients;
3. encode each micro-batch again, **with a graph**, and back-propagate its slice of the
   cached feature gradients. The random-number state of step 1 is replayed, so dropout
   and drop-path draw the same masks in both passes.

By the chain rule the parameters' ``.grad`` then equals that of one backward through the
whole batch, while the peak memory is one micro-batch of activations plus the
``O(B D)`` features and their gradients (plus the loss's own work, which the tiled path,
``chunk_size``, keeps at ``O(B D)`` too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from vlp._checks import check_int

__all__ = ["GradCache"]

Encoder = Callable[[Any], torch.Tensor]
LossFn = Callable[[torch.Tensor, torch.Tensor], Any]


@dataclass
class _RNGState:
    """The CPU generator state and that of every initialised CUDA device."""

    cpu: torch.Tensor
    cuda: list[torch.Tensor] | None

    @classmethod
    def capture(cls) -> _RNGState:
        cuda = None
        if torch.cuda.is_available() and torch.cuda.is_initialized():  # type: ignore[no-untyped-call]
            cuda = torch.cuda.get_rng_state_all()
        return cls(torch.get_rng_state(), cuda)

    def restore(self) -> None:
        torch.set_rng_state(self.cpu)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)


def _batch_size(name: str, inputs: Any) -> int:
    """Rows of ``inputs``: a tensor, or a list/tuple/dict of tensors sharing dim 0."""
    if isinstance(inputs, torch.Tensor):
        if inputs.dim() == 0:
            raise ValueError(f"{name} must have a batch dim (dim 0), got a 0-dim tensor")
        return int(inputs.shape[0])
    if isinstance(inputs, Mapping):
        leaves = list(inputs.values())
    elif isinstance(inputs, Sequence) and not isinstance(inputs, (str, bytes)):
        leaves = list(inputs)
    else:
        raise TypeError(
            f"{name} must be a tensor or a list, tuple or dict of tensors, "
            f"got {type(inputs).__name__}"
        )
    sizes = {_batch_size(name, leaf) for leaf in leaves}
    if len(sizes) != 1:
        raise ValueError(
            f"every tensor in {name} must have the same batch size (dim 0), got {sorted(sizes)}"
        )
    return sizes.pop()


def _slice(inputs: Any, start: int, stop: int) -> Any:
    if isinstance(inputs, torch.Tensor):
        return inputs[start:stop]
    if isinstance(inputs, Mapping):
        return type(inputs)({k: _slice(v, start, stop) for k, v in inputs.items()})  # type: ignore[call-arg]
    return type(inputs)(_slice(v, start, stop) for v in inputs)


def _check_features(name: str, features: object, rows: int) -> torch.Tensor:
    if not isinstance(features, torch.Tensor):
        raise TypeError(f"{name} must return a tensor, got {type(features).__name__}")
    if features.dim() < 1 or features.shape[0] != rows:
        raise ValueError(
            f"{name} must return one row per input row, ({rows}, ...), got {tuple(features.shape)}"
        )
    return features


def _loss_tensor(out: object) -> torch.Tensor:
    loss = getattr(out, "loss", out)  # a NamedTuple of details carries the scalar as .loss
    if not isinstance(loss, torch.Tensor) or loss.dim() != 0:
        raise TypeError(
            "loss_fn must return a scalar tensor (or a result with a scalar .loss), got "
            f"{type(loss).__name__}"
            + (f" of shape {tuple(loss.shape)}" if isinstance(loss, torch.Tensor) else "")
        )
    return loss


class GradCache:
    """Exact full-batch gradients of a contrastive loss, encoding in micro-batches.

    ``GradCache(loss_fn).step(encode_image, encode_text, images, texts, micro_batch=m)``
    runs the three passes of the module note and returns the detached loss. Afterwards the
    encoders' parameters (and the loss's own, e.g. the scale of a
    [`ClipLoss`][vlp.losses.clip.ClipLoss]) hold the gradient of one backward of
    ``loss_fn(encode_image(images), encode_text(texts))``, **accumulated** into ``.grad``
    like any ``backward()``: zero the gradients before the step as usual.

    ``loss_fn`` is any callable of ``(image_features, text_features)`` returning a scalar
    tensor (or a result with a scalar ``.loss``): every vlp contrastive loss and its module,
    its tiled path (``chunk_size``) and its distributed gather included (every rank calls
    ``step``; the loss's collectives run once, in pass 2). Bind other arguments with
    ``functools.partial`` or a lambda.

    Randomness: the CPU and CUDA generator states are saved before each micro-batch of
    pass 1 and restored before its replay, so dropout matches; after the step the
    generators are where pass 1 left them, as if each encoder had run once. Modules whose
    forward has side effects run twice per micro-batch (BatchNorm running statistics are
    updated twice; its batch statistics are per micro-batch, so a BatchNorm encoder's
    gradients equal those of the micro-batched forward, not of one full-batch forward).

    Data parallelism: GradCache issues no collective of its own. Under DDP pass the
    unwrapped module's encoders and average the gradients over ranks after the step (see
    ``docs/distributed.md``); under FSDP2 (``fully_shard``) every re-encoding backward
    reduce-scatters, so every rank must run the same number of micro-batches.

    Args:
        loss_fn: ``loss_fn(image_features, text_features) -> scalar``.

    Example:
        >>> from vlp.losses import ClipLoss
        >>> image_tower, text_tower = torch.nn.Linear(6, 4), torch.nn.Linear(5, 4)
        >>> cache = GradCache(ClipLoss())
        >>> loss = cache.step(image_tower, text_tower, torch.randn(8, 6), torch.randn(8, 5),
        ...                   micro_batch=3)
        >>> image_tower.weight.grad.shape, loss.requires_grad
        (torch.Size([4, 6]), False)
    """

    def __init__(self, loss_fn: LossFn) -> None:
        if not callable(loss_fn):
            raise TypeError(f"loss_fn must be callable, got {type(loss_fn).__name__}")
        self.loss_fn = loss_fn

    def __repr__(self) -> str:
        """Show the wrapped loss."""
        return f"GradCache(loss_fn={self.loss_fn!r})"

    def step(
        self,
        encode_image: Encoder,
        encode_text: Encoder,
        images: Any,
        texts: Any,
        *,
        micro_batch: int,
    ) -> torch.Tensor:
        """One gradient-cached forward and backward over the whole batch.

        Args:
            encode_image: ``encode_image(x) -> (b, D)`` features of a micro-batch ``x`` of
                ``images`` (a module or any callable).
            encode_text: ``encode_text(t) -> (b, D)`` features of a micro-batch of ``texts``.
            images: ``(B, ...)`` tensor, or a list/tuple/dict of tensors with ``B`` rows
                (split along dim 0).
            texts: the same for texts: ``B`` rows (e.g. ``(B, L)`` token ids).
            micro_batch: rows encoded at once, ``>= 1``; the last micro-batch may be
                smaller. ``B`` may be 0 where ``loss_fn`` allows it (an empty rank).

        Returns:
            The loss, a detached scalar tensor.

        Raises:
            TypeError: a non-int ``micro_batch``, inputs that are not tensors (or
                containers of them), encoders returning non-tensors, a loss that is not a
                scalar tensor.
            ValueError: ``micro_batch < 1``, images and texts with different batch sizes,
                or encoders returning the wrong number of rows.
        """
        check_int("micro_batch", micro_batch, low=1)
        for name, fn in (("encode_image", encode_image), ("encode_text", encode_text)):
            if not callable(fn):
                raise TypeError(f"{name} must be callable, got {type(fn).__name__}")
        rows = _batch_size("images", images)
        text_rows = _batch_size("texts", texts)
        if rows != text_rows:
            raise ValueError(
                f"images and texts must have the same batch size, got {rows} and {text_rows}"
            )
        bounds = [(s, min(s + micro_batch, rows)) for s in range(0, rows, micro_batch)]

        # Pass 1: features without a graph, remembering each micro-batch's RNG state.
        towers = (("encode_image", encode_image, images), ("encode_text", encode_text, texts))
        states: list[list[_RNGState]] = []
        features: list[torch.Tensor] = []
        with torch.no_grad():
            for name, encode, inputs in towers:
                tower_states, parts = [], []
                for start, stop in bounds:
                    tower_states.append(_RNGState.capture())
                    out = encode(_slice(inputs, start, stop))
                    parts.append(_check_features(name, out, stop - start).detach())
                if not parts:  # an empty batch: ask the encoder for the width of 0 rows
                    out = encode(_slice(inputs, 0, 0))
                    parts.append(_check_features(name, out, 0).detach())
                states.append(tower_states)
                features.append(torch.cat(parts))
        after = _RNGState.capture()

        # Pass 2: the loss on the whole batch and the gradients of its features.
        leaves = [f.requires_grad_() for f in features]
        loss = _loss_tensor(self.loss_fn(leaves[0], leaves[1]))
        if loss.requires_grad:
            torch.autograd.backward(loss)
        grads = [torch.zeros_like(f) if f.grad is None else f.grad for f in leaves]

        # Pass 3: re-encode each micro-batch with a graph, back-propagate its cached slice.
        try:
            for (name, encode, inputs), tower_states, grad in zip(towers, states, grads):
                for (start, stop), state in zip(bounds, tower_states):
                    state.restore()
                    out = _check_features(name, encode(_slice(inputs, start, stop)), stop - start)
                    if out.requires_grad:
                        torch.autograd.backward(out, grad[start:stop].to(out.dtype))
        finally:
            after.restore()
        return loss.detach()
