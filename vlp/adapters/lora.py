r"""Low-rank adaptation (LoRA) of unmodified open_clip towers, as FSC-CLIP fine-tunes them.

Each adapted weight ``W`` gets a trainable low-rank update, ``W + scaling * B A``, attached
with ``torch.nn.utils.parametrize``: the module (``nn.Linear``, ``nn.Conv2d`` or
``nn.MultiheadAttention``) keeps its class, its forward and its fast paths, and reads the
updated weight whenever it runs, so ``open_clip`` itself is never patched. Everything that is
not a LoRA matrix is frozen. ``merge_lora`` bakes the updates into plain weights.

Reference: Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", ICLR 2022
(eq. 3); targets, shapes and initialisation follow the FSC-CLIP release's loralib-derived
``lora_utils`` (Oh et al., EMNLP 2024; spec section 6). ``peft`` is not used: it is not a
dependency, and its convolution LoRA has another layout than loralib's. A parametrization
also reaches ``nn.MultiheadAttention.out_proj``, whose weight the attention reads directly
instead of calling the module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import nn
from torch.nn.utils import parametrize

from vlp._checks import check_float, check_int

__all__ = [
    "LoRAInit",
    "LoRATarget",
    "LoRAUpdate",
    "apply_lora",
    "load_lora_state_dict",
    "lora_parameters",
    "lora_state_dict",
    "merge_lora",
]

#: What :func:`apply_lora` adapts. ``"linear"``: every ``nn.Linear`` whose qualified name
#: does not contain ``"attn"`` (the MLP ``c_fc`` / ``c_proj`` of every residual block);
#: ``"conv"``: every ``nn.Conv2d`` (in an open_clip ViT, the patch embedding ``visual.conv1``);
#: ``"attention"``: every ``nn.MultiheadAttention`` of a residual block (its packed
#: ``in_proj_weight``, one ``A`` shared by q, k and v, and its ``out_proj``).
LoRATarget = Literal["linear", "conv", "attention"]

#: Initialisation of the attention ``in_proj`` update. ``"zero"``: ``A`` Kaiming-uniform,
#: ``B = 0``, like every other update, so the adapted model equals the original at step 0.
#: ``"reference"``: both ``A`` and ``B`` Xavier-uniform, the FSC-CLIP release's quirk, which
#: perturbs every attention layer before training starts.
LoRAInit = Literal["zero", "reference"]

_TARGETS: tuple[LoRATarget, ...] = ("linear", "conv", "attention")


class LoRAUpdate(nn.Module):
    """The parametrization ``W -> W + scaling * (B @ A).view(W.shape)`` of one weight.

    ``lora_A`` is ``(r_in, fan_in)``, ``lora_B`` is ``(fan_out, r_in)``; for a linear layer
    ``r_in = rank``, ``fan_in = in_features``, ``fan_out = out_features`` (Hu et al. 2022,
    eq. 3). For a square ``k x k`` convolution it is loralib's layout, ``A`` of
    ``(rank * k, in_channels * k)`` and ``B`` of ``(out_channels * k, rank * k)``, whose
    product is reshaped to the kernel's ``(out, in, k, k)``.

    Args:
        a_shape: shape of ``lora_A``.
        b_shape: shape of ``lora_B``.
        scaling: the multiplier of ``B A`` (``alpha / rank``).
        device: device of the matrices.
        dtype: dtype of the matrices.
    """

    def __init__(
        self,
        a_shape: tuple[int, int],
        b_shape: tuple[int, int],
        scaling: float,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        for name, shape in (("a_shape", a_shape), ("b_shape", b_shape)):
            ok = isinstance(shape, (tuple, list)) and len(shape) == 2
            if not ok or not all(isinstance(v, int) and not isinstance(v, bool) for v in shape):
                raise TypeError(f"{name} must be a pair of ints, got {shape!r:.60}")
            if min(shape) < 1:
                raise ValueError(f"{name} must be positive, got {shape!r}")
        if a_shape[0] != b_shape[1]:
            raise ValueError(
                f"a_shape[0] and b_shape[1] must both be the rank, got {a_shape} and {b_shape}"
            )
        if isinstance(scaling, bool) or not isinstance(scaling, (int, float)):
            raise TypeError(f"scaling must be a float, got {type(scaling).__name__}")
        if not math.isfinite(scaling):
            raise ValueError(f"scaling must be finite, got {scaling}")
        self.lora_A = nn.Parameter(torch.empty(a_shape, device=device, dtype=dtype))
        self.lora_B = nn.Parameter(torch.empty(b_shape, device=device, dtype=dtype))
        self.scaling = scaling
        self.reset_parameters("zero")

    def reset_parameters(self, init: LoRAInit = "zero") -> None:
        """``"zero"``: A Kaiming-uniform (a = sqrt 5), B = 0; ``"reference"``: both Xavier."""
        if init == "zero":
            nn.init.kaiming_uniform_(self.lora_A, a=math.sqrt(5))
            nn.init.zeros_(self.lora_B)
        else:
            nn.init.xavier_uniform_(self.lora_A)
            nn.init.xavier_uniform_(self.lora_B)

    def delta(self, shape: torch.Size) -> torch.Tensor:
        """``scaling * B A`` reshaped to the weight's ``shape``."""
        return self.scaling * (self.lora_B @ self.lora_A).view(shape)

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        """The adapted weight."""
        return weight + self.delta(weight.shape).to(weight.dtype)

    def extra_repr(self) -> str:
        """Show the shapes and the scaling."""
        return f"A={tuple(self.lora_A.shape)}, B={tuple(self.lora_B.shape)}, scaling={self.scaling}"


def _check_rank_scaling(rank: object, scaling: object) -> tuple[int, float]:
    return check_int("rank", rank, low=1), check_float("scaling", scaling)


def _check_targets(targets: object) -> tuple[LoRATarget, ...]:
    if isinstance(targets, str) or not isinstance(targets, Sequence):
        raise TypeError(f"targets must be a sequence of {_TARGETS}, got {targets!r}")
    for target in targets:
        if target not in _TARGETS:
            raise ValueError(f"targets must be drawn from {_TARGETS}, got {target!r}")
    if not targets:
        raise ValueError(f"targets must name at least one of {_TARGETS}, got an empty sequence")
    return tuple(targets)


def _attach(module: nn.Module, name: str, update: LoRAUpdate) -> LoRAUpdate:
    parametrize.register_parametrization(module, name, update)
    return update


def apply_lora(
    model: nn.Module,
    rank: int = 4,
    scaling: float = 0.25,
    targets: Sequence[LoRATarget] = _TARGETS,
    *,
    attention_init: LoRAInit = "zero",
    freeze: bool = True,
) -> nn.Module:
    r"""Add LoRA updates to an open_clip model in place and freeze everything else.

    Every targeted weight ``W`` becomes ``W + scaling * B A`` with ``B A`` of rank
    ``rank`` (Hu et al. 2022, eq. 3). The defaults are FSC-CLIP's: rank 4, scaling
    ``alpha / r = 1 / 4``, and all three targets of its release (spec section 6): the MLP
    linears of both towers, the patch embedding ``visual.conv1`` (loralib's convolution
    layout) and every residual-block ``nn.MultiheadAttention`` (a packed ``in_proj`` update
    whose ``A`` is shared by q, k and v, plus ``out_proj``). Projections, embeddings,
    LayerNorms, biases and the logit scale are not adapted. With ``freeze`` (default) only
    the LoRA matrices require grad, as the release's ``mark_only_lora_as_trainable``.

    **Initialisation.** Every ``B`` starts at zero (``A`` Kaiming-uniform), so the adapted
    model computes exactly what the original did until the first step: that is LoRA's
    definition, and it is the default here. The release initialises the attention
    ``in_proj`` update with both matrices Xavier-uniform instead, which perturbs the
    pretrained attention before training (random noise of std ~ 3 % of the weights' at
    ViT-B width); ``attention_init="reference"`` reproduces that.

    The model keeps its classes and its forward; the updated weights are recomputed at
    every access (use ``torch.nn.utils.parametrize.cached()`` around a forward to share them
    between calls). Load pretrained weights *before* applying LoRA: the state-dict keys of
    adapted weights change (``...weight`` becomes ``...parametrizations.weight.original``).

    Args:
        model: an ``open_clip.CLIP`` / ``CustomTextCLIP`` (or any module with these layers).
        rank: ``r >= 1``, at most the smaller dim of every adapted linear or attention
            weight (a larger ``B A`` would have no more rank) and at most the larger
            channel count of the convolution (beyond it ``A`` and ``B`` each outgrow the
            weight; FSC-CLIP's rank 4 on the 3-channel patch embedding stays allowed).
        scaling: multiplier of ``B A`` (loralib's ``lora_alpha / r``).
        targets: which layers to adapt, a subset of ``("linear", "conv", "attention")``.
        attention_init: ``"zero"`` (default) or ``"reference"`` for the ``in_proj`` update.
        freeze: set ``requires_grad`` to ``True`` for the LoRA matrices and ``False`` for
            every other parameter.

    Returns:
        ``model`` itself, adapted.

    Raises:
        TypeError: on a wrong argument type.
        ValueError: on a bad rank (below 1 or above the layers' bound), target or init, a
            convolution that is not square or grouped, an already adapted model, or when
            no layer matched.
    """
    _check_model(model)
    rank, scaling = _check_rank_scaling(rank, scaling)
    chosen = _check_targets(targets)
    if attention_init not in ("zero", "reference"):
        raise ValueError(f"attention_init must be 'zero' or 'reference', got {attention_init!r}")
    if any(isinstance(m, LoRAUpdate) for m in model.modules()):
        raise ValueError("model already has LoRA updates; merge_lora it first")

    # Collect first: registering parametrizations changes the module tree.
    linears: list[nn.Linear] = []
    convs: list[nn.Conv2d] = []
    attentions: list[nn.MultiheadAttention] = []
    widths: dict[str, int] = {}  # the smaller dim of each adapted weight
    for name, module in model.named_modules():
        if isinstance(module, nn.MultiheadAttention):
            if "attention" in chosen and "resblocks" in name:
                attentions.append(module)
                widths[name] = min(module.embed_dim, module.kdim, module.vdim)
        elif isinstance(module, nn.Linear):
            if "linear" in chosen and "attn" not in name:
                linears.append(module)
                widths[name] = min(module.in_features, module.out_features)
        elif isinstance(module, nn.Conv2d) and "conv" in chosen:
            kernel = module.kernel_size
            if kernel[0] != kernel[1] or module.groups != 1:
                raise ValueError(
                    f"LoRA convolutions need a square, ungrouped kernel; {name} has kernel "
                    f"{kernel} and groups={module.groups}"
                )
            convs.append(module)
            # FSC-CLIP's rank 4 on a 3-channel patch embedding already exceeds the
            # update's full rank (min channels); bound it where A and B each outgrow W.
            widths[name] = max(module.in_channels, module.out_channels)
    if not (linears or convs or attentions):
        raise ValueError(f"no layer of {type(model).__name__} matches targets {chosen}")
    # B A of an (out, in) weight has rank <= min(out, in): a larger rank adds parameters
    # (and memory: rank 10**6 on a 32-wide model is ~17 GB) but nothing it could learn.
    narrowest = min(widths, key=lambda n: widths[n])
    if rank > widths[narrowest]:
        raise ValueError(
            f"rank must be <= {widths[narrowest]}, the bound set by the narrowest adapted layer "
            f"({narrowest or 'model'}; see apply_lora's rank), got {rank}"
        )

    def new(a: tuple[int, int], b: tuple[int, int], like: torch.Tensor) -> LoRAUpdate:
        return LoRAUpdate(a, b, scaling, device=like.device, dtype=like.dtype)

    for linear in linears:
        w = linear.weight
        _attach(linear, "weight", new((rank, w.shape[1]), (w.shape[0], rank), w))
    for conv in convs:
        w, k = conv.weight, conv.kernel_size[0]
        a, b = (rank * k, conv.in_channels * k), (conv.out_channels * k, rank * k)
        _attach(conv, "weight", new(a, b, w))
    for attention in attentions:
        w = attention.in_proj_weight
        if w is None:
            raise ValueError(
                "LoRA attention needs a packed in_proj_weight (equal q, k, v dims), got "
                "separate projections"
            )
        update = new((rank, w.shape[1]), (w.shape[0], rank), w)
        update.reset_parameters(attention_init)
        _attach(attention, "in_proj_weight", update)
        out = attention.out_proj.weight
        _attach(attention.out_proj, "weight", new((rank, out.shape[1]), (out.shape[0], rank), out))
    if freeze:
        for name, param in model.named_parameters():
            param.requires_grad_("lora_" in name)
    return model


def _check_model(model: object) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module, got {type(model).__name__}")


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The LoRA matrices of ``model`` (what to hand the optimiser), in module order."""
    _check_model(model)
    return [p for n, p in model.named_parameters() if "lora_" in n]


def lora_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Only the LoRA matrices of ``model``'s state dict (detached), for small checkpoints.

    Keys are the model's own, e.g.
    ``visual.transformer.resblocks.0.mlp.c_fc.parametrizations.weight.0.lora_A``; save them
    with ``safetensors.torch.save_file`` and restore with :func:`load_lora_state_dict` on a
    model adapted with the same arguments.
    """
    _check_model(model)
    return {k: v.detach() for k, v in model.state_dict().items() if "lora_" in k}


def load_lora_state_dict(model: nn.Module, state: Mapping[str, torch.Tensor]) -> None:
    """Load :func:`lora_state_dict` output into an adapted model (the LoRA keys must match).

    Raises:
        ValueError: if the keys differ from the model's LoRA keys.
    """
    _check_model(model)
    expected = {k for k in model.state_dict() if "lora_" in k}
    if not isinstance(state, Mapping) or not all(
        isinstance(v, torch.Tensor) for v in state.values()
    ):
        raise TypeError(f"state must be a mapping of name -> tensor, got {type(state).__name__}")
    given = set(state)
    if given != expected:
        missing, unexpected = sorted(expected - given), sorted(given - expected)
        raise ValueError(
            f"state must hold exactly the model's {len(expected)} LoRA tensors; missing "
            f"{missing[:3]}{'...' if len(missing) > 3 else ''}, unexpected "
            f"{unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        )
    model.load_state_dict(dict(state), strict=False)


def merge_lora(model: nn.Module) -> nn.Module:
    """Fold every LoRA update into its weight (``W <- W + scaling * B A``) and remove it.

    The merged model has the original module tree and state-dict keys, computes what the
    adapted one did (up to rounding of ``W x + s B A x`` vs ``(W + s B A) x``; here both are
    ``(W + s B A) x``, so the outputs are equal), and costs nothing extra per forward.
    The merged weights keep the ``requires_grad`` of the original weights (frozen after
    :func:`apply_lora`).

    Returns:
        ``model`` itself.
    """
    _check_model(model)
    for module in list(model.modules()):
        if not parametrize.is_parametrized(module):
            continue
        chains = module.parametrizations
        assert isinstance(chains, nn.ModuleDict)
        for name in list(chains.keys()):
            if any(isinstance(p, LoRAUpdate) for p in chains[name].modules()):
                parametrize.remove_parametrizations(module, name, leave_parametrized=True)
    return model
