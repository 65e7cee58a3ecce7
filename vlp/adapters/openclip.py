"""Dense tokens out of unmodified open_clip models.

The image side re-runs the tower's own submodules in the order of
``open_clip.transformer.VisionTransformer.forward`` (patch conv, CLS, positional embedding,
``ln_pre``, the residual blocks, pooling, ``ln_post``, ``proj``); that leaves room to swap in
an interpolated positional embedding (local crops) or to keep a subset of the patches with a
key-padding mask (masked pre-training). The text side calls the model's own ``encode_text``
and reads the post-``ln_final`` sequence with a forward hook. Nothing in open_clip is patched.

Supported: ``open_clip.CLIP`` and ``open_clip.CustomTextCLIP`` (and their bare
``VisionTransformer`` / ``TextTransformer`` towers) with any ViT configuration: CLS or
average pooling, ``final_ln_after_pool``, the CoCa-style attentional pooler, custom blocks.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
from torch import nn

from vlp._checks import check_input_like, check_shape, check_tensor
from vlp._patches import check_images, pair
from vlp.adapters.pos_embed import PosInterpolation, interpolate_pos_embed
from vlp.adapters.tokens import (
    DenseTokens,
    check_keep_indices,
    eot_positions,
    padding_bias,
    text_token_mask,
)
from vlp.masking.dropout import gather_tokens

#: How filler slots enter attention: ``"mask"`` hides them as keys (additive -inf bias);
#: ``"reference"`` reproduces the cluster-masking release, whose mask only adds +1 to the
#: logits of visible-visible pairs and so leaves fillers visible (Wei et al., CVPR 2024,
#: authors' released code).
FillerAttention = Literal["mask", "reference"]

__all__ = [
    "FillerAttention",
    "open_clip_image_tokens",
    "open_clip_masked_image_tokens",
    "open_clip_multi_crop_tokens",
    "open_clip_pos_embed",
    "open_clip_text_tokens",
]


def _vision_tower(model: nn.Module) -> Any:
    from open_clip.transformer import VisionTransformer

    visual = getattr(model, "visual", model)
    if not isinstance(visual, VisionTransformer):
        raise TypeError(
            "model must be an open_clip model with a ViT image tower (or the tower itself, "
            f"open_clip.transformer.VisionTransformer), got image tower {type(visual).__name__}"
        )
    if getattr(visual, "attn_pool_contrastive", None) is not None:
        raise ValueError(
            "open_clip towers with attentional_pool='parallel' or 'cascade' are not supported "
            f"(got attn_pool_type={visual.attn_pool_type!r}); use attentional_pool=True or none"
        )
    return visual


def _check_images(images: object, visual: Any) -> torch.Tensor:
    images = check_images(images, channels=3)
    patch_h, patch_w = visual.patch_size
    height, width = images.shape[2], images.shape[3]
    if height < patch_h or width < patch_w:
        raise ValueError(
            f"images must be at least one patch {(patch_h, patch_w)}, got {(height, width)}"
        )
    if height % patch_h or width % patch_w:
        # The patch conv would silently drop the last rows/cols (a 39 px image is encoded
        # as 32 px at patch 16); vlp.masking rejects such sizes too.
        raise ValueError(
            f"images must have a height and width that are positive multiples of the "
            f"patch size {(patch_h, patch_w)}, got {(height, width)}; resize or crop them first"
        )
    check_input_like("images", images, visual.conv1.weight)
    return images


def open_clip_pos_embed(
    model: nn.Module,
    image_size: int | tuple[int, int],
    *,
    rule: PosInterpolation = "reference",
) -> torch.Tensor:
    """The image tower's positional embedding for images of another size.

    Returns ``visual.positional_embedding`` itself when the patch grid of ``image_size``
    equals the tower's, else :func:`~vlp.adapters.interpolate_pos_embed` of it (COSMOS
    local crops, Kim et al., CVPR 2025). Gradients flow to the parameter.

    Args:
        model: an open_clip model with a ViT image tower, or the tower.
        image_size: ``(H, W)`` of the images to encode (an int means square).
        rule: ``"reference"`` (COSMOS scale-factor rule) or ``"size"``.

    Returns:
        ``(1 + g_h * g_w, width)`` float tensor.

    Raises:
        TypeError: on a model without an open_clip ViT tower or a non-integer size.
        ValueError: on a size smaller than one patch or not a multiple of it, a grid more
            than 16 times the tower's per side (see
            :func:`~vlp.adapters.interpolate_pos_embed`), or ``rule="reference"`` on a
            tower with a non-square grid.
    """
    visual = _vision_tower(model)
    pos: torch.Tensor = visual.positional_embedding
    size = pair("image_size", image_size)
    patch_h, patch_w = visual.patch_size
    if size[0] >= patch_h and size[1] >= patch_w and (size[0] % patch_h or size[1] % patch_w):
        raise ValueError(
            f"image_size must be a multiple of the patch size {(patch_h, patch_w)} (the "
            f"adapters reject images that the patch conv would crop), got {size}"
        )
    grid = (size[0] // patch_h, size[1] // patch_w)
    if grid == tuple(visual.grid_size):
        return pos
    return interpolate_pos_embed(
        pos, size, visual.patch_size, rule=rule, grid_size=tuple(visual.grid_size)
    )


def _embed(
    visual: Any, images: torch.Tensor, pos_interpolation: PosInterpolation | None
) -> torch.Tensor:
    """Patch conv + CLS + positional embedding: ``(B, 1 + L, width)`` (before ``ln_pre``)."""
    x: torch.Tensor = visual.conv1(images)
    batch, width = x.shape[0], x.shape[1]
    grid = (x.shape[2], x.shape[3])
    x = x.reshape(batch, width, -1).permute(0, 2, 1)
    cls = visual.class_embedding.view(1, 1, -1).expand(batch, -1, -1).to(x.dtype)
    x = torch.cat([cls, x], dim=1)
    if grid == tuple(visual.grid_size):
        pos = visual.positional_embedding
    elif pos_interpolation is None:
        raise ValueError(
            f"images of size {tuple(images.shape[2:])} give a {grid} patch grid but the tower "
            f"was built for {tuple(visual.grid_size)}; pass pos_interpolation='reference' "
            "(COSMOS rule) or 'size' to resample the positional embedding"
        )
    else:
        size = (images.shape[2], images.shape[3])
        pos = open_clip_pos_embed(visual, size, rule=pos_interpolation)
    out: torch.Tensor = x + pos.to(x.dtype)
    return out


def _block_attn_mask(
    transformer: Any,
    pad: torch.Tensor | None,
    filler_attention: FillerAttention,
    dtype: torch.dtype,
) -> torch.Tensor | None:
    """The ``(B * heads, S, S)`` float mask open_clip blocks take, ``S = 1 + K``.

    It must be a float mask: ``ResidualAttentionBlock`` casts any mask to the activation
    dtype, which turns a boolean mask into a +1/0 bias (what the cluster-masking release
    runs). The ``"reference"`` mode builds exactly that +1 bias on purpose.
    """
    if pad is None:
        return None
    heads = int(transformer.resblocks[0].attn.num_heads)
    batch, seq = pad.shape[0], pad.shape[1] + 1
    if filler_attention == "reference":
        visible = torch.cat([pad.new_ones(batch, 1), ~pad], dim=1).to(dtype)
        pair = visible[:, :, None] * visible[:, None, :]
        return pair.repeat_interleave(heads, dim=0)
    bias = padding_bias(
        pad, batch=batch, num_prefix=1, num_kept=seq - 1, dtype=dtype, device=pad.device
    )
    assert bias is not None
    return bias[:, None, None, :].expand(batch, heads, seq, seq).reshape(batch * heads, seq, seq)


def _attn_pool(pooler: Any, x: torch.Tensor, key_padding: torch.Tensor | None) -> torch.Tensor:
    """open_clip ``AttentionalPooler`` with an optional boolean key-padding mask."""
    if key_padding is None:
        out: torch.Tensor = pooler(x)
        return out
    keys = pooler.ln_k(x)
    query = pooler.ln_q(pooler.query).unsqueeze(0).expand(x.shape[0], -1, -1)
    out = pooler.attn(query, keys, keys, need_weights=False, key_padding_mask=key_padding)[0]
    return out


def _global_pool(pool_type: str, x: torch.Tensor, valid: torch.Tensor | None) -> torch.Tensor:
    """open_clip's ``_global_pool`` (pooled part), with fillers left out of the average."""
    if pool_type == "tok":
        return x[:, 0]
    if pool_type == "avg":
        if valid is None:
            return x[:, 1:].mean(dim=1)
        weights = valid.to(x.dtype).unsqueeze(-1)
        count = weights.sum(dim=1).clamp_min(1.0)
        return (x[:, 1:] * weights).sum(dim=1) / count
    return x


def _encode_vision(
    model: nn.Module,
    images: object,
    keep_idx: object,
    key_padding_mask: object,
    *,
    masked: bool,
    project: bool,
    pos_interpolation: PosInterpolation | None,
    filler_attention: FillerAttention = "mask",
) -> DenseTokens:
    if filler_attention not in ("mask", "reference"):
        raise ValueError(
            f"filler_attention must be 'mask' or 'reference', got {filler_attention!r}"
        )
    visual = _vision_tower(model)
    images = _check_images(images, visual)
    if project and visual.attn_pool is not None and visual.proj is not None:
        raise ValueError(
            "project=True is not available for a tower with an attentional pooler: its patch "
            "tokens live before the pooler, where neither ln_post nor proj applies; pass "
            "project=False"
        )
    x = _embed(visual, images, pos_interpolation)
    batch, num_patches = x.shape[0], x.shape[1] - 1
    keep: torch.Tensor | None = None
    pad: torch.Tensor | None = None
    if masked:
        keep, pad = check_keep_indices(
            keep_idx, key_padding_mask, batch=batch, num_patches=num_patches
        )
        if keep.device != x.device:
            raise ValueError(
                f"keep_idx must be on the images' device {x.device}, got {keep.device}"
            )
        # Positions were added above, so every kept token keeps its own position.
        x = gather_tokens(x, keep, num_prefix_tokens=1)
    x = visual.ln_pre(x)
    attn_mask = _block_attn_mask(visual.transformer, pad, filler_attention, x.dtype)
    x = visual.transformer(x, attn_mask=attn_mask)
    valid = None if pad is None else ~pad

    if visual.attn_pool is not None:
        pooled_seq = visual.ln_post(_attn_pool(visual.attn_pool, x, _with_prefix(pad)))
        pooled = _global_pool(visual.pool_type, pooled_seq, None)
        tokens = x[:, 1:]
    elif visual.final_ln_after_pool:
        pooled = visual.ln_post(_global_pool(visual.pool_type, x, valid))
        tokens = visual.ln_post(x[:, 1:])
    else:
        x = visual.ln_post(x)
        pooled = _global_pool(visual.pool_type, x, valid)
        tokens = x[:, 1:]

    if project and visual.proj is not None:
        pooled = pooled @ visual.proj
        tokens = tokens @ visual.proj
    if valid is None:
        valid = torch.ones(tokens.shape[:2], dtype=torch.bool, device=tokens.device)
    return DenseTokens(pooled, tokens, valid)


def _with_prefix(pad: torch.Tensor | None) -> torch.Tensor | None:
    if pad is None:
        return None
    return torch.cat([pad.new_zeros(pad.shape[0], 1), pad], dim=1)


def open_clip_image_tokens(
    model: nn.Module,
    images: torch.Tensor,
    *,
    project: bool = True,
    pos_interpolation: PosInterpolation | None = None,
) -> DenseTokens:
    """Pooled embedding and patch tokens of an unmodified open_clip ViT.

    Patch tokens exclude the CLS token and are taken after ``ln_post`` (the final
    LayerNorm, applied per token also when the tower normalises after pooling), then
    multiplied by ``proj`` when ``project`` is true, the same map the pooled embedding
    gets. With ``project=True``, ``pooled`` equals ``model.encode_image(images)``
    bit for bit (the model's own ``PatchDropout``, active only in training, is not applied
    here: dense tokens cover the full grid). For a tower with an attentional pooler
    (CoCa style) the patch tokens are the last block's outputs (``ln_post`` and ``proj``
    act on the pooler's output width there), so only ``project=False`` is accepted.
    Dense patch tokens feed FSC-CLIP's local loss (Oh et al., EMNLP 2024) and COSMOS's
    cross-attention (Kim et al., CVPR 2025).

    Args:
        model: ``open_clip.CLIP`` / ``CustomTextCLIP`` with a ViT tower, or the tower.
        images: ``(B, 3, H, W)`` float, preprocessed as the model expects.
        project: apply the output projection ``proj`` to tokens and pooled embedding.
        pos_interpolation: how to resample the positional embedding when the image's patch
            grid differs from the tower's (e.g. COSMOS 96 px local crops): ``"reference"``
            (COSMOS rule), ``"size"``, or ``None`` to raise instead.

    Returns:
        :class:`DenseTokens`: ``pooled`` ``(B, D)``, ``tokens`` ``(B, L, D)`` with
        ``L = (H // p) * (W // p)`` in row-major grid order (``D = width`` when not
        projected), ``mask`` ``(B, L)`` all ``True``.

    Raises:
        TypeError: if the model has no open_clip ViT tower or ``images`` is not float.
        ValueError: on bad image shapes, or a grid change with ``pos_interpolation=None``.
    """
    return _encode_vision(
        model,
        images,
        None,
        None,
        masked=False,
        project=project,
        pos_interpolation=pos_interpolation,
    )


def open_clip_multi_crop_tokens(
    model: nn.Module,
    views: Sequence[torch.Tensor],
    *,
    project: bool = True,
    pos_interpolation: PosInterpolation | None = "reference",
) -> list[DenseTokens]:
    """Encode a list of multi-crop views, one tower call per run of equal resolution.

    Consecutive views of the same size are concatenated along the batch and encoded in one
    call, then split back (DINO's multi-crop wrapper, as COSMOS uses it: Kim et al.,
    CVPR 2025; global 224 px views in one call, local 96 px views in another). Views whose
    grid differs from the tower's get the interpolated positional embedding.

    Args:
        model: ``open_clip.CLIP`` / ``CustomTextCLIP`` with a ViT tower, or the tower.
        views: ``V`` float tensors ``(B_v, 3, H_v, W_v)``.
        project: as in :func:`open_clip_image_tokens`.
        pos_interpolation: as in :func:`open_clip_image_tokens` (default ``"reference"``).

    Returns:
        One :class:`DenseTokens` per view, in order; each equals
        ``open_clip_image_tokens(model, views[v], ...)`` up to batching round-off.

    Raises:
        ValueError: on an empty list, or as :func:`open_clip_image_tokens`.
        TypeError: if ``views`` is not a sequence of tensors.
    """
    if isinstance(views, torch.Tensor) or not isinstance(views, Sequence):
        raise TypeError(f"views must be a list of tensors, got {type(views).__name__}")
    if len(views) == 0:
        raise ValueError("views must hold at least one tensor, got an empty list")
    for index, view in enumerate(views):
        check_shape(f"views[{index}]", check_tensor(f"views[{index}]", view), ("B", 3, "H", "W"))
    outputs: list[DenseTokens] = []
    start = 0
    while start < len(views):
        stop = start + 1
        while stop < len(views) and views[stop].shape[2:] == views[start].shape[2:]:
            stop += 1
        group = list(views[start:stop])
        encoded = open_clip_image_tokens(
            model, torch.cat(group), project=project, pos_interpolation=pos_interpolation
        )
        sizes = [view.shape[0] for view in group]
        pieces = zip(*(torch.split(part, sizes) for part in encoded), strict=True)
        outputs.extend(DenseTokens(*piece) for piece in pieces)
        start = stop
    return outputs


def open_clip_masked_image_tokens(
    model: nn.Module,
    images: torch.Tensor,
    keep_idx: torch.Tensor,
    key_padding_mask: torch.Tensor | None = None,
    *,
    project: bool = True,
    pos_interpolation: PosInterpolation | None = None,
    filler_attention: FillerAttention = "mask",
) -> DenseTokens:
    """Encode only the kept patches of each image with an unmodified open_clip ViT.

    The positional embedding is added to all ``L`` patch tokens first; then the tokens at
    ``keep_idx`` are gathered (each keeps its own position) behind the CLS token, which is
    always kept. Slots marked ``True`` in ``key_padding_mask`` are fillers: they are hidden
    as keys in every attention layer (an additive ``-inf`` bias, never a boolean mask that
    open_clip would turn into a +1 bias) and left out of average / attentional pooling,
    so the pooled embedding depends neither on masked pixels nor on filler contents. This
    is the encoder cluster masking describes (Wei et al., CVPR 2024), and FLIP
    random patch dropout when ``key_padding_mask`` is ``None``.

    Args:
        model: ``open_clip.CLIP`` / ``CustomTextCLIP`` with a ViT tower, or the tower.
        images: ``(B, 3, H, W)`` float.
        keep_idx: ``(B, K)`` int64 indices into the ``L`` patch tokens (row-major grid).
        key_padding_mask: ``(B, K)`` bool, ``True`` = filler slot to ignore; ``None`` = no
            fillers.
        project: apply ``proj`` to tokens and pooled embedding.
        pos_interpolation: as in :func:`open_clip_image_tokens`.
        filler_attention: ``"mask"`` (default) hides fillers; ``"reference"`` reproduces
            the released cluster-masking code, whose attention mask only adds +1 to the
            logits between non-filler tokens (CLS included), so fillers stay visible and
            the embedding depends on them. Pooling leaves fillers out in both modes.

    Returns:
        :class:`DenseTokens`: ``pooled`` ``(B, D)``, ``tokens`` ``(B, K, D)`` for the kept
        slots (fillers included, in ``keep_idx`` order), ``mask`` ``(B, K)`` =
        ``~key_padding_mask`` (all ``True`` without one).

    Raises:
        TypeError: on a wrong model type or wrong dtypes.
        ValueError: on bad shapes or (CPU tensors) indices outside ``[0, L)``.
    """
    return _encode_vision(
        model,
        images,
        keep_idx,
        key_padding_mask,
        masked=True,
        project=project,
        pos_interpolation=pos_interpolation,
        filler_attention=filler_attention,
    )


def _text_parts(model: nn.Module) -> tuple[Callable[[torch.Tensor], Any], Any]:
    """(encode function, module holding ln_final / text_projection / pool settings)."""
    from open_clip.transformer import TextTransformer

    if isinstance(model, TextTransformer):
        tower: Any = model
    elif isinstance(getattr(model, "text", None), TextTransformer):
        tower = model.text
    elif hasattr(model, "token_embedding") and hasattr(model, "encode_text"):
        # open_clip.CLIP keeps the text tower's parts on the model itself.
        encode: Any = model.encode_text
        return encode, model
    else:
        raise TypeError(
            "model must be open_clip.CLIP, a CustomTextCLIP with a TextTransformer text tower, "
            f"or a TextTransformer, got {type(model).__name__}"
        )
    if tower.cls_emb is not None:
        raise ValueError(
            "text towers with embed_cls (CoCa) apply ln_final to the pooled token only; "
            "their all-position tokens are not supported"
        )
    return tower, tower


def open_clip_text_tokens(
    model: nn.Module, text: torch.Tensor, *, project: bool = True
) -> DenseTokens:
    """Pooled embedding and tokens at every position of an unmodified open_clip text tower.

    Runs the model's own ``encode_text`` (so with ``project=True`` ``pooled`` equals
    ``model.encode_text(text)`` bit for bit) and reads the post-``ln_final`` sequence with a
    forward hook; ``project`` multiplies every position by ``text_projection`` (or applies
    it when it is an ``nn.Linear``). The mask marks word tokens and EOT (start token and
    padding excluded), located by the tower's own pooling rule (``argmax`` or ``eos``).
    Text tokens feed FSC-CLIP's local loss (Oh et al., EMNLP 2024) and COSMOS's
    cross-attention, which uses all positions (Kim et al., CVPR 2025).

    Args:
        model: ``open_clip.CLIP``, ``CustomTextCLIP`` with a ``TextTransformer``, or the
            ``TextTransformer``.
        text: ``(B, L)`` int64 token ids from the model's tokenizer.
        project: apply the text projection to tokens and pooled embedding.

    Returns:
        :class:`DenseTokens`: ``pooled`` ``(B, D)``, ``tokens`` ``(B, L, D)`` (``D = width``
        when not projected), ``mask`` ``(B, L)`` from :func:`text_token_mask`.

    Raises:
        TypeError: on an unsupported model or non-integer ``text``.
        ValueError: on a bad shape, or a pooling rule without an EOT position.
    """
    text = check_tensor("text", text)
    check_shape("text", text, ("B", "L"))
    if text.is_floating_point() or text.dtype == torch.bool:
        raise TypeError(f"text must hold integer token ids, got dtype {text.dtype}")
    if text.numel() == 0:
        raise ValueError(f"text must not be empty, got shape {tuple(text.shape)}")
    encode, parts = _text_parts(model)
    embedding = getattr(parts, "token_embedding", None)
    if isinstance(embedding, nn.Embedding) and text.device.type == "cpu":
        low, high = int(text.min()), int(text.max())
        if low < 0 or high >= embedding.num_embeddings:
            raise ValueError(
                f"text token ids must lie in [0, {embedding.num_embeddings}) (the vocabulary), "
                f"got values in [{low}, {high}]"
            )
    if text.is_meta:
        raise ValueError("text must hold token ids (the EOT position is read), got a meta tensor")
    positions = getattr(parts, "positional_embedding", None)
    if isinstance(positions, torch.Tensor) and text.shape[1] > positions.shape[0]:
        raise ValueError(
            f"text must have at most {positions.shape[0]} tokens per row (the tower's context "
            f"length), got shape {tuple(text.shape)}"
        )
    pool_type = getattr(parts, "text_pool_type", getattr(parts, "pool_type", "argmax"))
    eos_id: Any = getattr(parts, "text_eos_id", getattr(parts, "eos_id", None))
    if pool_type not in ("argmax", "eos"):
        raise ValueError(
            f"text pooling {pool_type!r} has no EOT position to build the token mask from; "
            "only 'argmax' and 'eos' towers are supported"
        )
    eot_id = None if pool_type == "argmax" else int(eos_id)
    mask = text_token_mask(text, eot_token_id=eot_id)

    captured: list[torch.Tensor] = []

    def _hook(module: nn.Module, args: Any, output: torch.Tensor) -> None:
        captured.append(output)

    handle = parts.ln_final.register_forward_hook(_hook)
    try:
        out = encode(text)
    finally:
        handle.remove()
    pooled = out[0] if isinstance(out, tuple) else out
    if len(captured) != 1 or captured[0].shape[:2] != text.shape:
        raise ValueError(
            f"text of shape {tuple(text.shape)} was not encoded as one full sequence per row "
            "(pass (B, L) token ids, L the tokenizer's context length)"
        )
    tokens = captured[0]
    proj = parts.text_projection
    if project and proj is not None:
        tokens = proj(tokens) if isinstance(proj, nn.Linear) else tokens @ proj
    else:
        eot = eot_positions(text, eot_id)
        pooled = tokens[torch.arange(tokens.shape[0], device=tokens.device), eot]
    return DenseTokens(pooled, tokens, mask)
