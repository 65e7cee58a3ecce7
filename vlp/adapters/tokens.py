"""The container every adapter returns, the text token mask, and shared index checks."""

from __future__ import annotations

from typing import NamedTuple

import torch

from vlp._checks import check_bool_mask, check_shape, check_tensor, values_readable
from vlp._deprecated import deprecated_getattr

__all__ = ["DenseTokens", "text_token_mask"]

# gather_patches(tokens, keep_idx) is gather_tokens(tokens, keep_idx) (no prefix tokens).
__getattr__ = deprecated_getattr(
    __name__, {"gather_patches": ("vlp.masking.dropout:gather_tokens", "vlp.masking.gather_tokens")}
)


class DenseTokens(NamedTuple):
    """Pooled embedding plus per-token features of one encoder call.

    A ``NamedTuple``, so ``pooled, tokens, mask = open_clip_image_tokens(...)`` works.

    Attributes:
        pooled: the model's own pooled embedding, ``(B, D)`` float (``(B, S, D)`` for an
            open_clip tower built with ``pool_type="none"``). With projection on it equals
            ``model.encode_image`` / ``model.encode_text`` (or ``timm_model(images)``).
        tokens: per-token features, ``(B, T, C)`` float: image patch tokens (prefix tokens
            such as CLS excluded) or text tokens at every position.
        mask: ``(B, T)`` bool, ``True`` where the token is real content: every patch of a
            full image, the kept non-filler patches of a masked image, the word tokens and
            the EOT token of a caption (start token and padding are ``False``).
    """

    pooled: torch.Tensor
    tokens: torch.Tensor
    mask: torch.Tensor


def text_token_mask(
    text: torch.Tensor,
    *,
    eot_token_id: int | None = None,
    has_sot: bool = True,
    pad_token_id: int | None = None,
) -> torch.Tensor:
    """Mark the word tokens and the end-of-text token of tokenised captions.

    The EOT position is ``text.argmax(-1)`` when ``eot_token_id`` is ``None`` (the CLIP
    tokenizer, whose EOT id is the largest in the vocabulary; open_clip's ``argmax``
    pooling), else the first position holding ``eot_token_id`` (open_clip's ``eos``
    pooling). Positions after EOT (padding) and, with ``has_sot``, position 0 (the
    start-of-text token) are ``False``. With ``pad_token_id`` every position holding that
    id is ``False`` too: ``pad_token_id=0`` reproduces the FSC-CLIP reference mask
    ``(text > 0)`` with column 0 cleared, which also drops in-caption tokens of id 0 (``"!"``
    in the CLIP vocabulary). Used by token-level losses such as FSC-CLIP's local
    hard-negative loss (Oh et al., EMNLP 2024).

    Args:
        text: token ids, ``(B, L)`` integer tensor.
        eot_token_id: id of the EOT token, or ``None`` for the argmax rule.
        has_sot: whether position 0 holds a start-of-text token to leave out.
        pad_token_id: if given, positions holding this id are ``False`` as well.

    Returns:
        ``(B, L)`` bool tensor on ``text``'s device, ``True`` at positions
        ``int(has_sot) <= j <= eot``.

    Raises:
        TypeError: if ``text`` is not an integer tensor.
        ValueError: if ``text`` is not 2-D or is empty.
    """
    check_shape("text", text, ("B", "L"))
    if text.is_floating_point() or text.is_complex() or text.dtype == torch.bool:
        raise TypeError(f"text must hold integer token ids, got dtype {text.dtype}")
    if text.numel() == 0:
        raise ValueError(f"text must not be empty, got shape {tuple(text.shape)}")
    for name, value in (("eot_token_id", eot_token_id), ("pad_token_id", pad_token_id)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise TypeError(f"{name} must be an int or None, got {type(value).__name__}")
    if not isinstance(has_sot, bool):
        raise TypeError(f"has_sot must be a bool, got {type(has_sot).__name__}")
    eot = eot_positions(text, eot_token_id)
    positions = torch.arange(text.shape[1], device=text.device)
    mask = positions[None, :] <= eot[:, None]
    if has_sot:
        mask &= positions[None, :] >= 1
    if pad_token_id is not None:
        mask &= text != pad_token_id
    return mask


def eot_positions(text: torch.Tensor, eot_token_id: int | None) -> torch.Tensor:
    """``(B,)`` EOT index per row: argmax of the ids, or the first ``eot_token_id``."""
    if eot_token_id is None:
        return text.argmax(dim=-1)
    hits: torch.Tensor = text == eot_token_id
    return hits.int().argmax(dim=-1)


def check_keep_indices(
    keep_idx: object, key_padding_mask: object, *, batch: int, num_patches: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Validate ``keep_idx`` ``(B, K)`` long and an optional ``(B, K)`` bool padding mask.

    The index range is read only for CPU tensors (on a GPU it would synchronise).
    """
    keep = check_tensor("keep_idx", keep_idx)
    check_shape("keep_idx", keep, (batch, "K"))
    if keep.dtype != torch.long:
        raise TypeError(f"keep_idx must have dtype torch.int64, got {keep.dtype}")
    if keep.shape[1] == 0:
        raise ValueError("keep_idx must keep at least one patch, got K = 0")
    if values_readable(keep):
        low, high = int(keep.min()), int(keep.max())
        if low < 0 or high >= num_patches:
            raise ValueError(
                f"keep_idx must index the {num_patches} patch tokens (0 <= i < {num_patches}), "
                f"got values in [{low}, {high}]"
            )
    if key_padding_mask is None:
        return keep, None
    pad = check_tensor("key_padding_mask", key_padding_mask)
    check_bool_mask("key_padding_mask", pad, tuple(keep.shape))
    if pad.device != keep.device:
        raise ValueError(
            f"key_padding_mask must be on keep_idx's device {keep.device}, got {pad.device}"
        )
    return keep, pad


def padding_bias(
    key_padding_mask: torch.Tensor | None,
    *,
    batch: int,
    num_prefix: int,
    num_kept: int,
    dtype: torch.dtype,
    device: torch.device,
) -> torch.Tensor | None:
    """Additive key bias ``(B, P + K)``: 0 for prefix and kept tokens, -inf for fillers.

    Prefix tokens (CLS, registers) are never padded, so no softmax row is all -inf.
    """
    if key_padding_mask is None:
        return None
    prefix = torch.zeros(batch, num_prefix, dtype=dtype, device=device)
    kept = torch.zeros(batch, num_kept, dtype=dtype, device=device)
    kept = kept.masked_fill(key_padding_mask, float("-inf"))
    return torch.cat([prefix, kept], dim=1)
