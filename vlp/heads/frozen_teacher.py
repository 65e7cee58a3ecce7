"""A frozen teacher: any module in eval mode under ``no_grad``, returning L2-normalised features."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from vlp._checks import check_bool, check_state_dict, check_tensor

__all__ = ["FrozenTeacher"]

FeatureFn = Callable[[nn.Module, Any], torch.Tensor]


def _call_model(model: nn.Module, inputs: Any) -> torch.Tensor:
    out: torch.Tensor = model(inputs)
    return out


class FrozenTeacher(nn.Module):
    """Wrap a pretrained model as a frozen distillation teacher (S-SMKE).

    The wrapped model's parameters are set to ``requires_grad=False``, it is put in
    ``eval()`` mode at construction, **kept there whatever mode the parent is put in**
    (``train()`` is overridden, and ``forward`` re-asserts eval mode in case the model was
    switched directly), and every call runs under ``torch.no_grad()``. Dropout, drop-path
    and batch-norm statistics of the teacher therefore never change its targets. (The
    S-SMKE reference put its teacher in eval mode once, so a later ``.train()`` on the
    parent could make the targets stochastic.) Likewise, a parent's
    ``requires_grad_(True)`` (which sets every parameter directly) is undone at the next
    call. DDP registers the parameters that require grad when it is built, so build it
    while the teacher is frozen (an unfrozen teacher makes DDP fail at the second step
    with unused parameters); a frozen teacher inside a DDP-wrapped parent works.

    The wrapped model is a submodule: by default its weights are in the parent's
    ``state_dict`` (under ``<name>.model.``), so a checkpoint restores the teacher too;
    ``persistent=False`` leaves them out. They move with ``.to()`` either way. The cache
    is in the ``state_dict`` too with ``cache=True`` (``cache_ids`` and ``cache_features``
    tensors), so
    a resumed run reuses the features an uninterrupted one would; it moves and casts with
    the module. A ``load_state_dict`` that fails (a missing, unexpected or misshapen
    entry, or a malformed cache) changes nothing.

    ``forward(inputs)`` returns ``normalize(feature_fn(model, inputs))`` of shape
    ``(B, E)``. With ``cache=True`` and ``sample_ids``, features are stored per id and
    only samples not seen before are computed: use it only when a sample's teacher
    input is the same every time (no random augmentation).

    Args:
        model: the teacher, any ``nn.Module``.
        feature_fn: ``feature_fn(model, inputs) -> (B, E)``; default ``model(inputs)``.
            For a timm ViT whose CLS token of the last block is the target (S-SMKE's
            BEiT v2 with the final norm removed):
            ``lambda m, x: m.forward_features(x)[:, 0]``.
        normalize: L2-normalise the features along the last dim.
        cache: keep the features of every sample id seen (see above).
        persistent: keep the wrapped model's weights in ``state_dict``. With ``False``
            they are left out (as the S-SMKE reference's checkpoints do), a checkpoint
            without them loads strictly and leaves the teacher as built, and one with
            them still loads them.

    Example:
        >>> teacher = FrozenTeacher(nn.Sequential(nn.Linear(4, 3), nn.Dropout(0.5)))
        >>> parent = nn.ModuleDict({"teacher": teacher}).train()
        >>> x = torch.randn(2, 4)
        >>> torch.equal(teacher(x), teacher(x)), teacher(x).requires_grad
        (True, False)
    """

    def __init__(
        self,
        model: nn.Module,
        feature_fn: FeatureFn | None = None,
        *,
        normalize: bool = True,
        cache: bool = False,
        persistent: bool = True,
    ) -> None:
        super().__init__()
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")
        if feature_fn is not None and not callable(feature_fn):
            raise TypeError(f"feature_fn must be callable, got {type(feature_fn).__name__}")
        self.model = model
        self.feature_fn: FeatureFn = _call_model if feature_fn is None else feature_fn
        self.normalize = check_bool("normalize", normalize)
        self.use_cache = check_bool("cache", cache)
        self._cache: dict[int, torch.Tensor] = {}
        self.persistent = check_bool("persistent", persistent)
        if not self.persistent:
            self.register_state_dict_post_hook(_drop_model_entries)  # type: ignore[no-untyped-call]
            self.register_load_state_dict_pre_hook(_fill_model_entries)  # type: ignore[no-untyped-call]
        model.requires_grad_(False)
        model.eval()

    def train(self, mode: bool = True) -> FrozenTeacher:
        """Set this wrapper's mode flag; the wrapped model stays in eval mode."""
        super().train(mode)
        self.model.eval()
        return self

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> Any:
        # `.to()`, `.half()`, `.cuda()` ... move and cast the cached features like a buffer,
        # so that cached and fresh rows of one batch share a device and dtype.
        out = super()._apply(fn, recurse)  # type: ignore[no-untyped-call]
        self._cache = {k: fn(v) for k, v in self._cache.items()}
        return out

    def _features(self, inputs: Any) -> torch.Tensor:
        if any(m.training for m in self.model.modules()):
            self.model.eval()
        # A parent's requires_grad_(True) sets the teacher's parameters directly; undo it.
        if any(p.requires_grad for p in self.model.parameters()):
            self.model.requires_grad_(False)
        out = self.feature_fn(self.model, inputs)
        check_tensor("feature_fn output", out)
        if out.dim() != 2:
            raise ValueError(f"feature_fn output must have shape (B, E), got {tuple(out.shape)}")
        return F.normalize(out, dim=-1) if self.normalize else out

    @torch.no_grad()
    def forward(self, inputs: Any, sample_ids: torch.Tensor | None = None) -> torch.Tensor:
        """Teacher features of a batch, detached.

        Args:
            inputs: whatever ``feature_fn`` takes, typically images ``(B, 3, H, W)``.
                With the cache on it must be a tensor whose dim 0 is the batch.
            sample_ids: ``(B,)`` integer ids of the samples, for the cache (ignored when
                the cache is off).

        Returns:
            ``(B, E)`` features, L2-normalised if ``normalize``; ``requires_grad`` is False.

        Raises:
            ValueError: if the features are not 2-D, or ``sample_ids`` does not match the batch.
            TypeError: on a non-integer ``sample_ids``, or non-tensor inputs with the cache.
        """
        if not self.use_cache or sample_ids is None:
            return self._features(inputs)
        check_tensor("inputs", inputs)
        check_tensor("sample_ids", sample_ids)
        if sample_ids.is_floating_point() or sample_ids.dtype == torch.bool:
            raise TypeError(f"sample_ids must have an integer dtype, got {sample_ids.dtype}")
        if sample_ids.shape != (inputs.shape[0],):
            raise ValueError(
                f"sample_ids must have shape ({inputs.shape[0]},) (one id per input), "
                f"got {tuple(sample_ids.shape)}"
            )
        ids = [int(i) for i in sample_ids.tolist()]
        missing = [k for k, i in enumerate(ids) if i not in self._cache]
        if missing:
            index = torch.tensor(missing, device=inputs.device)
            fresh = self._features(inputs.index_select(0, index))
            for k, row in zip(missing, fresh):
                self._cache[ids[k]] = row.clone()
        return torch.stack([self._cache[i] for i in ids])

    def _save_to_state_dict(
        self, destination: dict[str, Any], prefix: str, keep_vars: bool
    ) -> None:
        # The cache as two tensors (safetensors can store them): ids and their features.
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if not self.use_cache:
            return
        ids = list(self._cache)
        features = torch.stack([self._cache[i] for i in ids]) if ids else torch.zeros(0, 0)
        destination[prefix + "cache_ids"] = torch.tensor(ids, dtype=torch.int64)
        destination[prefix + "cache_features"] = features

    def _load_from_state_dict(
        self,
        state_dict: dict[str, Any],
        prefix: str,
        local_metadata: dict[str, Any],
        strict: bool,
        missing_keys: list[str],
        unexpected_keys: list[str],
        error_msgs: list[str],
    ) -> None:
        keys = (prefix + "cache_ids", prefix + "cache_features")
        cache: dict[int, torch.Tensor] | None = None
        if any(k in state_dict for k in keys):
            try:
                cache = _loaded_cache(state_dict.get(keys[0]), state_dict.get(keys[1]))
            except (TypeError, ValueError) as err:
                error_msgs.append(str(err))
                return
        errors = len(error_msgs)
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )
        for key in keys:  # not buffers: torch calls them unexpected
            if key in unexpected_keys:
                unexpected_keys.remove(key)
        # A checkpoint from before the cache was saved leaves the cache as it is.
        if cache is not None and len(error_msgs) == errors:
            self._cache = cache

    def load_state_dict(
        self, state_dict: Mapping[str, Any], strict: bool = True, assign: bool = False
    ) -> Any:
        """Load a checkpoint; one with a missing, unexpected or misshapen entry changes nothing."""
        cache_keys = ("cache_ids", "cache_features")
        own = {k: v for k, v in self.state_dict(keep_vars=True).items() if k not in cache_keys}
        optional: list[str] = []
        if not self.persistent:
            weights = {f"model.{k}": v for k, v in self.model.state_dict(keep_vars=True).items()}
            own.update(weights)
            optional += list(weights)
        given = {k: v for k, v in state_dict.items() if k not in cache_keys}
        check_state_dict(type(self).__name__, own, given, strict=strict, optional=optional)
        if any(k in state_dict for k in cache_keys):
            try:
                _loaded_cache(state_dict.get("cache_ids"), state_dict.get("cache_features"))
            except (TypeError, ValueError) as err:
                raise RuntimeError(
                    f"Error(s) in loading state_dict for {type(self).__name__} (nothing was "
                    f"loaded): {err}"
                ) from err
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def clear_cache(self) -> None:
        """Drop every cached feature."""
        self._cache.clear()

    def cache_size(self) -> int:
        """Number of cached sample ids."""
        return len(self._cache)

    def extra_repr(self) -> str:
        """Show the options."""
        return f"normalize={self.normalize}, cache={self.use_cache}, persistent={self.persistent}"


def _loaded_cache(ids: object, features: object) -> dict[int, torch.Tensor]:
    if not isinstance(ids, torch.Tensor) or ids.dtype != torch.int64 or ids.dim() != 1:
        raise ValueError(f"FrozenTeacher cache_ids must be a 1-D int64 tensor, got {ids!r:.80}")
    if not isinstance(features, torch.Tensor) or features.dim() != 2:
        raise ValueError(
            f"FrozenTeacher cache_features must be a (N, E) tensor, got {features!r:.80}"
        )
    if features.shape[0] != ids.numel():
        raise ValueError(
            f"FrozenTeacher cache_features has {features.shape[0]} rows for {ids.numel()} cache_ids"
        )
    if torch.unique(ids).numel() != ids.numel():
        raise ValueError("FrozenTeacher cache_ids must be distinct")
    return dict(zip(ids.tolist(), features.unbind(0)))


def _drop_model_entries(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, local_metadata: Any
) -> None:
    for key in [k for k in state_dict if k.startswith(prefix + "model.")]:
        del state_dict[key]


def _fill_model_entries(
    module: nn.Module, state_dict: dict[str, Any], prefix: str, *args: Any
) -> None:
    # Entries a non-persistent teacher left out are "loaded" from its current weights
    # (state_dict is load_state_dict's own copy), so a strict load does not miss them.
    assert isinstance(module, FrozenTeacher)
    for key, value in module.model.state_dict().items():
        state_dict.setdefault(f"{prefix}model.{key}", value)
