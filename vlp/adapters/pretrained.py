"""Truncated pretrained encoders and the checkpoint loaders that fill them (adapters, not forks).

S-SMKE slices the first 6 of 12 layers of a pretrained image encoder and of a
pretrained text encoder. Here the image encoder is any timm ``VisionTransformer``
([`TimmViTEncoder`][vlp.adapters.TimmViTEncoder]) and the text encoder any open_clip
``TextTransformer`` ([`OpenClipTextEncoder`][vlp.adapters.OpenClipTextEncoder]), causal as
pretrained or bidirectional with a padding mask (the BERT-like setting of the reference);
HF ``transformers`` encoders are not a dependency of vlp. Both are truncated in place.
Weights come from safetensors or ``torch.save`` state-dict files:
[`load_pretrained`][vlp.adapters.load_pretrained] keeps the keys of the layers that were
kept and checks that every weight of the truncated encoder is there. timm, open_clip and
safetensors are imported when they are used, not with this module.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from vlp._checks import check_bool_mask, check_int, check_shape, check_tensor

__all__ = [
    "OpenClipTextEncoder",
    "StateSource",
    "TimmViTEncoder",
    "load_pretrained",
    "load_state_dict_file",
]

#: A checkpoint path or an in-memory state dict.
StateSource = str | os.PathLike[str] | Mapping[str, torch.Tensor]


def _check_layers(name: str, value: object, available: int) -> int:
    if isinstance(value, int) and not isinstance(value, bool) and value > available:
        raise ValueError(f"{name} must lie in [1, {available}] (the encoder's depth), got {value}")
    return check_int(name, value, low=1, high=available)


def load_state_dict_file(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Read a state dict from a safetensors file or a ``torch.save`` file, on the CPU.

    ``.safetensors`` files are read with ``safetensors``; anything else with
    ``torch.load(weights_only=True)``. A checkpoint that wraps its weights in a
    ``"state_dict"``, ``"model"`` or ``"module"`` entry is unwrapped.

    Args:
        path: the file.

    Returns:
        ``{name: tensor}``.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if the file holds no tensor mapping, or one with non-tensor entries
            besides the unwrapped weights (nothing is dropped silently).
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike, got {type(path).__name__}")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"path must be an existing checkpoint file, got {str(path)!r}")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return dict(load_file(str(path), device="cpu"))
    obj: Any = torch.load(path, map_location="cpu", weights_only=True)
    for _ in range(3):
        if isinstance(obj, Mapping) and not any(isinstance(v, torch.Tensor) for v in obj.values()):
            inner = next((obj[k] for k in ("state_dict", "model", "module") if k in obj), None)
            if inner is None:
                break
            obj = inner
    if not isinstance(obj, Mapping) or not obj:
        raise ValueError(
            f"{str(path)!r} must hold a state dict (name -> tensor), got {type(obj).__name__}"
        )
    other = [str(k) for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    if other:
        # Dropping them would lose weights silently ({"model": {...}, "w2": t} kept only
        # w2; {"ema": {...}} gave {}).
        raise ValueError(
            f"{str(path)!r} must hold a state dict (name -> tensor), possibly wrapped in a "
            f"'state_dict', 'model' or 'module' entry; entries {other[:5]} are not tensors. "
            "Load the file yourself and pass the state dict you mean to load_pretrained"
        )
    return {str(k): v for k, v in obj.items()}


def load_pretrained(
    module: nn.Module,
    source: StateSource,
    *,
    prefix: str = "",
    rename: Sequence[tuple[str, str]] = (),
) -> list[str]:
    """Load the weights ``module`` has from a (larger) checkpoint; return the keys not used.

    Keys are taken from ``source`` that start with ``prefix`` (stripped), then each
    ``(old, new)`` of ``rename`` replaces a leading ``old`` with ``new`` (first match
    wins). Every entry of ``module.state_dict()`` must then be present with its shape;
    keys the module does not have (layers beyond the kept ones, final norms, heads,
    the other tower) are ignored and returned.

    Args:
        module: the (truncated) encoder to fill.
        source: a checkpoint path (see
            [`load_state_dict_file`][vlp.adapters.load_state_dict_file]) or a
            state dict.
        prefix: keep only keys starting with it, e.g. ``"visual."``.
        rename: leading-substring substitutions applied after ``prefix`` is stripped,
            e.g. ``[("extra_tokens", "cls_token")]``.

    Returns:
        The sorted checkpoint keys (after renaming) that were not loaded.

    Raises:
        ValueError: if a weight of ``module`` is missing from the checkpoint or has
            another shape.
    """
    if not isinstance(module, nn.Module):
        raise TypeError(f"module must be an nn.Module, got {type(module).__name__}")
    if not isinstance(prefix, str):
        raise TypeError(f"prefix must be a str, got {type(prefix).__name__}")
    if (
        isinstance(rename, str)
        or not isinstance(rename, Sequence)
        or not all(
            isinstance(r, (tuple, list)) and len(r) == 2 and all(isinstance(x, str) for x in r)
            for r in rename
        )
    ):
        raise TypeError(f"rename must be a sequence of (old, new) string pairs, got {rename!r:.60}")
    state = load_state_dict_file(source) if isinstance(source, (str, os.PathLike)) else source
    if not isinstance(state, Mapping):
        raise TypeError(f"source must be a path or a state dict, got {type(state).__name__}")
    renamed: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if not key.startswith(prefix):
            continue
        key = key[len(prefix) :]
        for old, new in rename:
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        renamed[key] = value
    own = module.state_dict()
    missing = sorted(set(own) - set(renamed))
    if missing:
        shown = ", ".join(missing[:8]) + (" ..." if len(missing) > 8 else "")
        raise ValueError(
            f"source must hold every weight of the encoder, but {len(missing)} are missing "
            f"(prefix={prefix!r}): {shown}"
        )
    for key, want in own.items():
        got = renamed[key]
        check_tensor(key, got)
        if got.shape != want.shape:
            raise ValueError(
                f"checkpoint entry {key!r} must have shape {tuple(want.shape)}, "
                f"got {tuple(got.shape)}"
            )
    module.load_state_dict({k: renamed[k] for k in own}, strict=True)
    return sorted(set(renamed) - set(own))


class TimmViTEncoder(nn.Module):
    """The first ``num_layers`` blocks of a timm ``VisionTransformer``, returning every token.

    The ViT is truncated **in place**: its blocks beyond ``num_layers`` are removed and
    its final norm, pooling norm and head become ``nn.Identity``. ``forward`` runs
    ``patch_embed``, the positional embedding and prefix tokens, ``norm_pre`` and the
    kept blocks, and returns ``(B, 1 + L, D)`` tokens with the CLS token first. Build a
    Data2Vec2-style encoder with ``block_fn=``[`PostLNBlock`][vlp.models.ssmke.PostLNBlock],
    ``no_embed_class=True``, ``pre_norm=True``.

    Args:
        vit: a ``timm.models.vision_transformer.VisionTransformer`` with a class token.
        num_layers: ``k``, the blocks kept (6 of 12 in S-SMKE).
    """

    def __init__(self, vit: nn.Module, num_layers: int) -> None:
        super().__init__()
        from timm.models.vision_transformer import VisionTransformer

        if not isinstance(vit, VisionTransformer):
            raise TypeError(f"vit must be a timm VisionTransformer, got {type(vit).__name__}")
        if getattr(vit, "cls_token", None) is None:
            raise ValueError("vit must have a class token (class_token=True)")
        self.num_layers = _check_layers("num_layers", num_layers, len(vit.blocks))
        vit.blocks = vit.blocks[:num_layers]
        vit.norm = nn.Identity()
        vit.fc_norm = nn.Identity()
        vit.head = nn.Identity()
        if getattr(vit, "attn_pool", None) is not None:
            setattr(vit, "attn_pool", None)  # noqa: B010
        self.vit = vit
        self.width = int(vit.embed_dim)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``(B, 3, H, W)`` images to ``(B, 1 + L, D)`` tokens of the last kept block."""
        out: torch.Tensor = self.vit.forward_features(images)
        return out

    def load_pretrained(
        self, source: StateSource, *, prefix: str = "", rename: Sequence[tuple[str, str]] = ()
    ) -> list[str]:
        """Load the full ViT's checkpoint (timm key names); returns the unused keys.

        See [`load_pretrained`][vlp.adapters.load_pretrained].
        """
        return load_pretrained(self.vit, source, prefix=prefix, rename=rename)


class OpenClipTextEncoder(nn.Module):
    """The first ``num_layers`` blocks of an open_clip ``TextTransformer``, returning every token.

    The text tower is truncated **in place**: resblocks beyond ``num_layers`` are
    removed, ``ln_final`` becomes ``nn.Identity`` and the projection is dropped.
    ``forward(ids, padding_mask)`` returns ``(B, T, D)`` tokens; the start-of-text
    token (index 0) plays the CLS token's part in the shared block.

    With ``causal=False`` (the default) attention is bidirectional with padded keys masked,
    the BERT-like setting of S-SMKE's text encoder: the start token sees the whole caption.
    With ``causal=True`` the tower's causal mask is kept (as open_clip towers are
    pretrained); then the start token attends only to itself, so its output is **the same
    for every caption** and the shared block's CLS pooling must recover the caption from the
    other tokens alone.

    Args:
        text: an ``open_clip.transformer.TextTransformer`` without an appended CLS
            embedding.
        num_layers: ``k``, the resblocks kept.
        causal: keep the causal mask (see above).
    """

    def __init__(self, text: nn.Module, num_layers: int, *, causal: bool = False) -> None:
        super().__init__()
        from open_clip.transformer import TextTransformer

        if not isinstance(text, TextTransformer):
            raise TypeError(f"text must be an open_clip TextTransformer, got {type(text).__name__}")
        if text.cls_emb is not None:
            raise ValueError("text must not append a CLS embedding (embed_cls=False)")
        self.num_layers = _check_layers("num_layers", num_layers, len(text.transformer.resblocks))
        text.transformer.resblocks = text.transformer.resblocks[:num_layers]
        text.ln_final = nn.Identity()
        text.text_projection = None
        self.text = text
        self.causal = bool(causal)
        self.heads = int(text.heads)
        self.width = int(text.width)

    def forward(self, ids: torch.Tensor, padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """Token ids to tokens.

        Args:
            ids: ``(B, T)`` integer ids, ``T <=`` the tower's context length.
            padding_mask: ``(B, T)`` bool, True at padding; used when ``causal=False``
                (default ``ids == text.pad_id``). A caption must have at least one token
                that is not padding.

        Returns:
            ``(B, T, D)`` tokens of the last kept block.
        """
        check_shape("ids", ids, ("B", "T"))
        t = ids.shape[1]
        if t > self.text.positional_embedding.shape[0]:
            raise ValueError(
                f"ids must have at most {self.text.positional_embedding.shape[0]} tokens, got {t}"
            )
        tower = self.text
        cast = tower.transformer.get_cast_dtype()
        x = tower.token_embedding(ids).to(cast) + tower.positional_embedding[:t].to(cast)
        if self.causal:
            mask = torch.full((t, t), float("-inf"), device=x.device, dtype=x.dtype).triu_(1)
        else:
            if padding_mask is None:
                padding_mask = ids == tower.pad_id
            check_bool_mask("padding_mask", padding_mask, tuple(ids.shape))
            mask = torch.zeros(ids.shape[0], 1, t, device=x.device, dtype=x.dtype)
            mask = mask.masked_fill(padding_mask[:, None, :], float("-inf"))
            mask = mask.expand(-1, t, -1).repeat_interleave(self.heads, 0)
        out: torch.Tensor = tower.transformer(x, attn_mask=mask)
        return out

    def load_pretrained(
        self, source: StateSource, *, prefix: str = "", rename: Sequence[tuple[str, str]] = ()
    ) -> list[str]:
        """Load a ``TextTransformer`` or full open_clip ``CLIP`` checkpoint; return unused keys.

        A full ``CLIP`` state dict keeps its text weights at the top level
        (``token_embedding.weight``, ``transformer.resblocks.*``), so it loads with the
        default ``prefix=""``. See [`load_pretrained`][vlp.adapters.load_pretrained].
        """
        return load_pretrained(self.text, source, prefix=prefix, rename=rename)
