"""SigLIP's pairwise sigmoid loss, with a memory-bounded chunked path and distributed gathering.

Reference: Zhai et al., "Sigmoid Loss for Language Image Pre-Training", ICCV 2023
(Algorithm 1, equation 1).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vlp._checks import check_bool, check_float
from vlp.distributed import ProcessGroup
from vlp.kernels import Backend
from vlp.kernels.contrastive import DEFAULT_CHUNK, tiled_sigmoid_loss
from vlp.losses._contrastive import as_scalar, check_pair, check_sample_ids, logits_dtype, promote
from vlp.losses._gather import allow_empty, start_gather, validated
from vlp.losses._infonce import check_backend, check_chunk_size, empty_rows_loss
from vlp.losses._renamed import renamed_keywords
from vlp.losses.logit_scale import LogitScale

__all__ = ["SigLipLoss", "siglip_loss"]


def _positives(
    rows: int,
    offset: int,
    start: int,
    stop: int,
    row_ids: torch.Tensor | None,
    column_ids: torch.Tensor | None,
    device: torch.device,
) -> torch.Tensor:
    """``(rows, stop - start)`` bool mask of the positive pairs among columns ``start:stop``.

    Without ids, row ``i`` owns column ``offset + i``; with ids, equal ids are positives.
    """
    if row_ids is not None and column_ids is not None:
        return row_ids[:, None] == column_ids[None, start:stop]
    cols = torch.arange(start, stop, device=device)
    return cols[None, :] == (offset + torch.arange(rows, device=device))[:, None]


def siglip_loss(
    image_features: torch.Tensor,
    text_features: torch.Tensor,
    logit_scale: float | torch.Tensor,
    logit_bias: float | torch.Tensor,
    *,
    chunk_size: int | None = None,
    sample_ids: torch.Tensor | None = None,
    local_loss: bool = True,
    gather_with_grad: bool = True,
    group: ProcessGroup | None = None,
    backend: Backend = "auto",
) -> torch.Tensor:
    r"""Pairwise sigmoid loss of SigLIP (Zhai et al. 2023, eq. 1), normalised as open_clip's.

    Features are L2-normalised along ``D``; the logits are
    ``z_ij = logit_scale * <image_i, text_j> + logit_bias`` and the labels
    ``y_ij = +1`` for the pair ``i == j``, ``-1`` otherwise. The loss sums over every
    pair and divides by the batch size, exactly as ``open_clip.loss.SigLipLoss``:

    $$\mathcal{L} = -\frac1N \sum_{i,j} \log \sigma(y_{ij} z_{ij}).$$

    With ``sample_ids``, ``y_ij = +1`` for every pair with equal ids (several captions
    of one image), ``-1`` otherwise; distinct ids give the loss above.

    **Chunking.** With ``chunk_size=c`` (or ``backend="triton"``) the loss goes through
    [`tiled_sigmoid_loss`][vlp.kernels.contrastive.tiled_sigmoid_loss]: the text columns
    are processed ``c`` at a time (or in SRAM tiles by the Triton kernel), and since the
    sigmoid loss's gradient is known in the forward pass it is computed there, so the
    ``N x N`` logit matrix is never formed and nothing is recomputed (peak extra memory
    ``O(N c)``). The value equals the unchunked one up to summation order. This path
    supports first-order gradients only (``create_graph=True`` raises); use
    ``chunk_size=None`` for more.

    **Distributed** (``W > 1`` ranks, rank ``r`` holding ``n_r`` pairs,
    ``M = sum(n_r)``; sizes may differ). Text features are all-gathered with gradient
    and each rank scores its own images against every text, with the other ranks'
    texts as negatives only, and returns ``W / M`` times its rows' summed terms. With
    equal sizes that is open_clip's per-rank value (``1 / n_r`` times the local rows);
    in general the per-rank values sum to ``W`` times the single-process loss on the
    global batch, so after DDP averages gradients training matches single-process
    training, and their mean is the global loss. The gradients of ``logit_scale`` and
    ``logit_bias`` are averaged over the group in the backward, so they are right
    whether or not they are DDP parameters. (open_clip exchanges text blocks round a
    ring instead of gathering them; the result is the same, the gather needs
    ``O(M D)`` memory per rank.) Other settings, as in [`clip_loss`][vlp.losses.clip.clip_loss]:

    - ``local_loss=False``: the images are gathered too and every rank computes the whole
      ``M x M`` loss (value = global loss on every rank, same gradients, ``W`` times the
      compute).
    - ``gather_with_grad=False``: other ranks' features carry no gradient; this rank's own
      rows are put back into their slot with theirs. With ``local_loss=False`` the gradient
      after DDP averaging is the global one divided by ``W``; with ``local_loss=True`` the
      terms of other ranks' images drop out of the text gradients.

    Args:
        image_features: ``(N, D)`` floating, this rank's image embeddings.
        text_features: ``(N, D)``, same device (a different floating dtype is promoted);
            row ``i`` pairs with image ``i``.
        logit_scale: positive multiplier (already exponentiated): float or one-element tensor.
        logit_bias: scalar added to every logit (SigLIP initialises it to -10).
        chunk_size: number of text columns per block, or ``None`` to form the whole
            logit matrix with plain autograd.
        sample_ids: optional ``(N,)`` integer tensor; equal ids are positives. Ids are
            compared across ranks, so make them globally unique per sample.
        local_loss: compute only this rank's image rows (see above).
        gather_with_grad: gather other ranks' features with gradient (see above).
        group: process group; ``None`` means the default group if one is initialised,
            ``False`` this rank alone (no communication, even inside a job).
        backend: ``"auto"``, ``"torch"`` or ``"triton"`` for the chunked path (see
            [`vlp.kernels`][vlp.kernels]); ``"triton"`` selects it even without
            ``chunk_size``.

    Returns:
        Scalar loss tensor (float32 or wider).

    Raises:
        ValueError: on mismatched or non-2-D shapes, an empty batch, NaN/inf features
            (checked on CPU tensors), a non-positive ``logit_scale``, a non-finite
            ``logit_bias`` or a ``chunk_size`` below 1.
        TypeError: on non-floating or differing feature dtypes, a non-int ``chunk_size``
            or non-integer ``sample_ids``.
    """
    with validated(group, "siglip_loss"):
        check_pair(image_features, text_features, allow_empty=allow_empty(group))
        image_features, text_features = promote(image_features, text_features)
        scale = as_scalar("logit_scale", logit_scale, image_features, positive=True)
        bias = as_scalar("logit_bias", logit_bias, image_features, positive=False)
        check_chunk_size(chunk_size)
        check_backend(backend)
        check_bool("local_loss", local_loss)
        check_bool("gather_with_grad", gather_with_grad)
        if sample_ids is not None:
            check_sample_ids(sample_ids, image_features.shape[0], image_features)

    image = F.normalize(image_features, dim=-1)
    text = F.normalize(text_features, dim=-1)
    facts = {
        "sample_ids given": sample_ids is not None,
        "logit_scale requires grad": scale.requires_grad,
        "logit_bias requires grad": bias.requires_grad,
        "local_loss": local_loss,
        "gather_with_grad": gather_with_grad,
    }
    gather = start_gather(text, group, facts=facts, caller="siglip_loss")
    # Without gathered gradients this rank's own rows keep theirs (in their slot): the
    # texts are columns only, so they would otherwise get no gradient at all.
    all_text = gather.everyone(text, with_grad=gather_with_grad, keep_local=True)
    if not local_loss:
        image = gather.everyone(image, with_grad=gather_with_grad, keep_local=True)
    all_ids = None if sample_ids is None else gather.everyone(sample_ids, with_grad=False)
    scale, bias = gather.shared(scale), gather.shared(bias)
    if local_loss:
        offset, weight = gather.offset, gather.world / all_text.shape[0]
    else:
        offset, weight, sample_ids = 0, 1.0 / all_text.shape[0], all_ids

    if chunk_size is None and backend != "triton":
        dtype = logits_dtype(image.dtype)
        logits = scale * (image @ all_text.T).to(dtype) + bias
        n, m = logits.shape
        positive = _positives(n, offset, 0, m, sample_ids, all_ids, image.device)
        total = -F.logsigmoid(torch.where(positive, logits, -logits)).sum()
    elif image.shape[0] == 0:
        total = empty_rows_loss(image, all_text, scale, bias)
    else:
        if sample_ids is None or all_ids is None:
            row_ids = torch.arange(offset, offset + image.shape[0], device=image.device)
            column_ids = torch.arange(all_text.shape[0], device=image.device)
        else:
            row_ids, column_ids = sample_ids, all_ids
        total = tiled_sigmoid_loss(
            image, all_text, scale, bias, row_ids=row_ids, col_ids=column_ids, weight=1.0,
            chunk_size=DEFAULT_CHUNK if chunk_size is None else chunk_size, backend=backend,
        )  # fmt: skip
    loss: torch.Tensor = weight * total
    return loss


class SigLipLoss(nn.Module):
    """SigLIP loss with a learnable scale and bias (Zhai et al. 2023, Algorithm 1).

    Calls [`siglip_loss`][vlp.losses.siglip.siglip_loss] with its own parameters.

    The scale is a [`LogitScale`][vlp.losses.logit_scale.LogitScale] initialised to 10
    (its parameter to ``log 10``) and the bias a scalar parameter initialised to -10,
    as in SigLIP. ``forward`` never mutates them; call `clamp_()` after the optimiser
    step to keep the scale in ``[1, max_scale]``.

    Args:
        init_scale: initial logit scale (the multiplier).
        init_bias: initial logit bias.
        max_scale: upper bound applied by `clamp_()`.
        learnable_scale: whether scale and bias are trained parameters (``learnable=`` is
            its deprecated name).
        local_loss: see [`siglip_loss`][vlp.losses.siglip.siglip_loss].
        gather_with_grad: see [`siglip_loss`][vlp.losses.siglip.siglip_loss].
        group: process group used for gathering; ``None`` means the default group,
            ``False`` this rank alone.
        chunk_size: see [`siglip_loss`][vlp.losses.siglip.siglip_loss].
        backend: see [`siglip_loss`][vlp.losses.siglip.siglip_loss].
        device: device of the parameters.
        dtype: dtype of the parameters.

    Example:
        >>> loss_fn = SigLipLoss(chunk_size=4)
        >>> loss = loss_fn(torch.randn(8, 32), torch.randn(8, 32))
        >>> loss.backward()
        >>> loss_fn.clamp_()  # after optimizer.step()
    """

    @renamed_keywords(learnable="learnable_scale")
    def __init__(
        self,
        init_scale: float = 10.0,
        init_bias: float = -10.0,
        *,
        max_scale: float = 100.0,
        learnable_scale: bool = True,
        local_loss: bool = True,
        gather_with_grad: bool = True,
        group: ProcessGroup | None = None,
        chunk_size: int | None = None,
        backend: Backend = "auto",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        init_bias = check_float("init_bias", init_bias)
        check_bool("learnable_scale", learnable_scale)
        check_chunk_size(chunk_size)
        check_backend(backend)
        self.logit_scale = LogitScale(
            init_scale,
            max_scale=max_scale,
            learnable_scale=learnable_scale,
            device=device,
            dtype=dtype,
        )
        self.logit_bias = nn.Parameter(
            torch.full((), init_bias, device=device, dtype=dtype), requires_grad=learnable_scale
        )
        self.local_loss = check_bool("local_loss", local_loss)
        self.gather_with_grad = check_bool("gather_with_grad", gather_with_grad)
        self.group = group
        self.chunk_size = chunk_size
        self.backend: Backend = backend

    def forward(
        self,
        image_features: torch.Tensor,
        text_features: torch.Tensor,
        *,
        sample_ids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Compute the loss.

        Args:
            image_features: ``(N, D)`` floating image embeddings.
            text_features: ``(N, D)`` text embeddings paired row by row.
            sample_ids: optional ``(N,)`` integer ids; equal ids are positives.

        Returns:
            Scalar loss (see [`siglip_loss`][vlp.losses.siglip.siglip_loss] for its
            distributed value).
        """
        return siglip_loss(
            image_features,
            text_features,
            self.logit_scale(),
            self.logit_bias,
            chunk_size=self.chunk_size,
            sample_ids=sample_ids,
            local_loss=self.local_loss,
            gather_with_grad=self.gather_with_grad,
            group=self.group,
            backend=self.backend,
        )

    def clamp_(self) -> None:
        """Clamp the learnable scale into its bounds; call after ``optimizer.step()``."""
        self.logit_scale.clamp_()

    def extra_repr(self) -> str:
        """Show the configuration."""
        return (
            f"local_loss={self.local_loss}, gather_with_grad={self.gather_with_grad}, "
            f"chunk_size={self.chunk_size}, backend={self.backend!r}"
        )
