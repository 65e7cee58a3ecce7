"""Property-based fuzzing of vlp's public API (issue 17).

Every callable in the ``__all__`` of every subpackage is called with generated bad input,
and the outcome must be one of

- a ``ValueError`` or ``TypeError`` whose message names an argument of the callable
  ("clear error"), or
- a result whose tensors hold no NaN (and no inf, except the documented ``-inf`` of
  cluster scores) ("finite result").

Anything else (another exception type, a message naming no argument, NaN in the output,
a call running past its time limit) is a finding. Two kinds of cases:

- **baseline cases**: a valid call (small shapes) whose arguments are corrupted one at a
  time (wrong ranks and dims, empty and single-row batches, NaN/inf, bad scales, wrong
  dtypes and devices, non-contiguous and stride-0 tensors, bad masks, odd image sizes,
  unicode and very long captions, huge sizes); the uncorrupted call must give a finite
  result;
- **walk cases**: every public callable, baseline or not, called with arguments drawn
  from the same pool of bad values.

Hypothesis draws the cases (derandomised, so a run is reproducible); each call runs under
a SIGALRM time limit, so a hang is a finding, not a stuck test. Run it as a script (the
pytest test in ``test_fuzz.py`` does, in a subprocess with a memory limit)::

    python tests/fuzz_harness.py --examples 3000 --json /tmp/fuzz.json
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import inspect
import json
import random
import re
import signal
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import vlp

#: Every subpackage ``import vlp`` offers.
SUBPACKAGES = tuple(vlp._SUBMODULES)

#: Callables left out of the walk, with the reason.
SKIP = {
    "kernels.import_triton": "imports Triton; nothing to fuzz",
    "models.PostLNBlock": "its constructor is timm's Block's (only forward is vlp's)",
    "data.write_shards": "writes files (covered by the shard tests)",
    "data.shapes_from_shards": "opens URLs (covered by the shard tests)",
}

#: Results that may hold -inf by contract (flat or non-finite patches score -inf).
INF_OK = ("masking.cluster_scores", "masking.cluster_mask", "masking.embedding_rgb_scores")

#: Callables that move data or run a model forward: NaN/inf in their input may reach
#: their output (as in torch). Losses and metrics instead reject NaN/inf input (eagerly,
#: on CPU tensors), and masking treats a non-finite patch as flat.
PROPAGATES = re.compile(
    r"^(adapters\.open_clip_\w+|adapters\.timm_vit_\w+|adapters\.interpolate_pos_embed|"
    r"heads\.\w+\(\)|models\.\w+\(\)|distributed\.\w+|masking\.(patchify|unpatchify|"
    r"gather_tokens))$"
)

#: Arguments the walk leaves at their defaults: they go straight to torch's factory
#: functions, whose own errors (``RuntimeError: Expected one of cpu, cuda ...``) apply.
WALK_KEEP = ("device", "dtype", "group")

TIME_LIMIT_S = 10


class CallTimeout(Exception):
    """Raised by the SIGALRM handler when a call runs past its limit."""


# --- valid baseline calls ----------------------------------------------------------------


def _g(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _feat(n: int = 4, d: int = 8, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=_g(seed))


def _images(b: int = 2, size: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, size, size, generator=_g(seed))


def _tiny_clip() -> nn.Module:
    import open_clip
    from open_clip.model import CLIPTextCfg, CLIPVisionCfg

    torch.manual_seed(0)
    vision = CLIPVisionCfg(layers=1, width=32, head_width=16, patch_size=8, image_size=32)
    text = CLIPTextCfg(context_length=8, vocab_size=64, width=32, heads=2, layers=1)
    return open_clip.CLIP(16, vision, text).eval()


def _tiny_timm() -> nn.Module:
    from timm.models.vision_transformer import VisionTransformer

    torch.manual_seed(0)
    return VisionTransformer(
        img_size=32, patch_size=8, embed_dim=32, depth=1, num_heads=2, num_classes=4
    ).eval()


Baseline = Callable[[], tuple[Callable[..., Any], dict[str, Any]]]


def _module_call(factory: Callable[[], nn.Module], **kwargs: Any) -> Baseline:
    def make() -> tuple[Callable[..., Any], dict[str, Any]]:
        return factory(), dict(kwargs)

    return make


def _fn(name: str, **kwargs: Any) -> Baseline:
    def make() -> tuple[Callable[..., Any], dict[str, Any]]:
        return _resolve(name), {k: v() if callable(v) and getattr(v, "lazy", False) else v
                                for k, v in kwargs.items()}  # fmt: skip

    return make


def _lazy(fn: Callable[[], Any]) -> Callable[[], Any]:
    fn.lazy = True  # type: ignore[attr-defined]
    return fn


def _resolve(qualname: str) -> Any:
    package, name = qualname.split(".", 1)
    return getattr(importlib.import_module(f"vlp.{package}"), name)


def _baselines() -> dict[str, Baseline]:
    f, t = _feat(), _feat(seed=1)
    neg = torch.randn(4, 2, 8, generator=_g(2))
    neg_mask = torch.tensor([[True, True], [True, False], [False, False], [True, True]])
    tokens = torch.randn(4, 5, 8, generator=_g(3))
    tmask = torch.ones(4, 5, dtype=torch.bool)
    ntok = torch.randn(4, 2, 5, 8, generator=_g(4))
    nmask = torch.ones(4, 2, 5, dtype=torch.bool)
    images = _images()
    anchors = torch.tensor([[0, 5], [3, 9]])
    scores = torch.rand(2, 16, generator=_g(5))
    masked = torch.rand(2, 16, generator=_g(6)) > 0.5
    keep = torch.tensor([[0, 2, 4], [1, 3, 4]])
    views = [_feat(seed=s) for s in range(2)]
    rng = random.Random(0)
    out: dict[str, Baseline] = {
        "losses.clip_loss": _fn(
            "losses.clip_loss", image_features=f, text_features=t, logit_scale=10.0
        ),
        "losses.siglip_loss": _fn(
            "losses.siglip_loss",
            image_features=f,
            text_features=t,
            logit_scale=10.0,
            logit_bias=-10.0,
        ),
        "losses.negclip_loss": _fn(
            "losses.negclip_loss",
            image_features=f,
            text_features=t,
            negative_features=_feat(seed=7),
            negative_mask=None,
            logit_scale=10.0,
        ),
        "losses.hard_negative_loss": _fn(
            "losses.hard_negative_loss",
            image_features=f,
            text_features=t,
            negative_features=neg,
            negative_mask=neg_mask,
            logit_scale=10.0,
        ),
        "losses.local_hard_negative_loss": _fn(
            "losses.local_hard_negative_loss",
            image_tokens=tokens,
            text_tokens=tokens.flip(1),
            text_mask=tmask,
            negative_tokens=ntok,
            negative_token_mask=nmask,
            negative_mask=neg_mask,
            logit_scale=10.0,
        ),
        "losses.fsc_clip_loss": _fn(
            "losses.fsc_clip_loss",
            image_features=f,
            text_features=t,
            negative_features=neg,
            negative_mask=neg_mask,
            logit_scale=10.0,
            image_tokens=tokens,
            text_tokens=tokens.flip(1),
            text_mask=tmask,
            negative_tokens=ntok,
            negative_token_mask=nmask,
        ),
        "losses.scr_loss": _fn(
            "losses.scr_loss",
            logits=torch.randn(4, 3, generator=_g(8)),
            valid=torch.ones(4, 2, dtype=torch.bool),
        ),
        "losses.feature_distillation_loss": _fn(
            "losses.feature_distillation_loss", student=f, teacher=t
        ),
        "losses.contrastive_distillation_loss": _fn(
            "losses.contrastive_distillation_loss",
            student_image=f,
            student_text=t,
            teacher=_feat(seed=9),
            bank=_feat(6, 8, seed=10),
            logit_scale=10.0,
        ),
        "losses.multiview_clip_loss": _fn(
            "losses.multiview_clip_loss", views_a=views, views_b=views[::-1], logit_scale=10.0
        ),
        "losses.cosmos_distillation_loss": _fn(
            "losses.cosmos_distillation_loss",
            student_image=views,
            student_text=views,
            teacher_image=views[::-1],
            teacher_text=views[::-1],
            logit_scale=10.0,
        ),
        "losses.ssmke_loss": _fn(
            "losses.ssmke_loss",
            image=(f, f, f),
            text=(t, t, t),
            teacher=_feat(seed=9),
            bank=None,
            kd_scale=10.0,
            itc_scale_intermediate=10.0,
            itc_scale_output=10.0,
        ),
        "losses.ClipLoss()": _module_call(
            lambda: _resolve("losses.ClipLoss")(), image_features=f, text_features=t
        ),
        "losses.SigLipLoss()": _module_call(
            lambda: _resolve("losses.SigLipLoss")(), image_features=f, text_features=t
        ),
        "losses.ContrastiveDistillationLoss()": _module_call(
            lambda: _resolve("losses.ContrastiveDistillationLoss")(8, 8),
            student_image=f,
            student_text=t,
            teacher=_feat(seed=9),
        ),
        "masking.patchify": _fn("masking.patchify", images=images, patch_size=4),
        "masking.unpatchify": _fn(
            "masking.unpatchify", patches=torch.randn(2, 16, 48), patch_size=4, image_size=(16, 16)
        ),
        "masking.patch_features": _fn("masking.patch_features", images=images, patch_size=4),
        "masking.cluster_scores": _fn(
            "masking.cluster_scores", images=images, anchors=anchors, patch_size=4, backend="torch"
        ),
        "masking.cluster_mask": _fn(
            "masking.cluster_mask",
            images=images,
            patch_size=4,
            threshold=0.3,
            generator=_g(11),
            backend="torch",
        ),
        "masking.calibrate_threshold": _fn("masking.calibrate_threshold", scores=scores),
        "masking.realised_ratio": _fn("masking.realised_ratio", scores=scores, threshold=0.5),
        "masking.select_kept_tokens": _fn(
            "masking.select_kept_tokens", masked=masked, generator=_g(12)
        ),
        "masking.gather_tokens": _fn("masking.gather_tokens", tokens=tokens[:2], keep_idx=keep),
        "masking.sample_anchors": _fn(
            "masking.sample_anchors", batch=2, num_patches=16, num_anchors=2, generator=_g(13)
        ),
        "masking.patch_dropout": _fn(
            "masking.patch_dropout", batch=2, num_patches=16, mask_ratio=0.5, generator=_g(14)
        ),
        "masking.random_patch_mask": _fn(
            "masking.random_patch_mask", batch=2, num_patches=16, mask_ratio=0.5, generator=_g(15)
        ),
        "masking.num_kept": _fn("masking.num_kept", num_patches=16, mask_ratio=0.5),
        "masking.max_kept": _fn("masking.max_kept", num_patches=16, min_ratio=0.3),
        "masking.num_anchors": _fn("masking.num_anchors", num_patches=16),
        "masking.grid_size": _fn("masking.grid_size", image_size=(16, 16), patch_size=4),
        "masking.embedding_rgb_scores": _fn(
            "masking.embedding_rgb_scores",
            images=images,
            embeddings=torch.randn(2, 16, 8),
            anchors=anchors,
            patch_size=4,
            embed_weight=0.5,
        ),
        "masking.embedding_weight": _fn("masking.embedding_weight", epoch=3.0),
        "masking.ClusterMasking()": _module_call(
            lambda: _resolve("masking.ClusterMasking")(4, generator=_g(16), backend="torch"),
            images=images,
        ),
        "losses.LogitScale": _fn("losses.LogitScale", init=10.0),
        "losses.TeacherMemoryBank": _fn("losses.TeacherMemoryBank", size=8, dim=4),
        "heads.cosine_momentum": _fn("heads.cosine_momentum", step=3, total_steps=10, base=0.99),
        "heads.CrossAttentionPooler()": _module_call(
            lambda: _resolve("heads.CrossAttentionPooler")(8, 2),
            queries=_feat(2, 8),
            tokens=tokens[:2],
            backend="torch",
        ),
        "heads.COSMOSHead()": _module_call(
            lambda: _resolve("heads.COSMOSHead")(
                8, image_token_dim=6, text_token_dim=5, num_heads=2
            ),
            image=torch.randn(2, 3, 8),
            text=torch.randn(2, 2, 8),
            image_tokens=torch.randn(2, 4, 6),
            text_tokens=torch.randn(2, 7, 5),
            backend="torch",
        ),
        "models.SharedBlock()": _module_call(
            lambda: _resolve("models.SharedBlock")(8, 2),
            x=torch.randn(2, 3, 8),
            key_padding=torch.tensor([[False, False, True], [False, True, True]]),
        ),
        "models.SSMKEHead()": _module_call(lambda: _resolve("models.SSMKEHead")(8, 4), x=_feat()),
        "models.TokenTypeEmbedding()": _module_call(
            lambda: _resolve("models.TokenTypeEmbedding")(2, 8), x=tokens, type_id=1
        ),
        "augment.split_sentences": _fn(
            "augment.split_sentences", text="A red cube. Two blue balls! A cat?"
        ),
        "augment.text_crop": _fn(
            "augment.text_crop", sentences=["a cube", "two balls", "x"], rng=rng
        ),
        "negatives.hard_negatives": _fn(
            "negatives.hard_negatives",
            captions=["a red cube left of a blue ball", "two cats on a mat"],
            rng=random.Random(1),
        ),
        "negatives.swap": _fn(
            "negatives.swap", caption="a red cube and a blue ball", rng=random.Random(2)
        ),
        "negatives.replace": _fn(
            "negatives.replace", caption="a red cube and a blue ball", rng=random.Random(3)
        ),
        "negatives.shuffle": _fn(
            "negatives.shuffle", caption="a red cube and a blue ball", rng=random.Random(4)
        ),
        "eval.retrieval_recall": _fn(
            "eval.retrieval_recall",
            similarity=torch.randn(3, 6, generator=_g(17)),
            caption_to_image=torch.tensor([0, 0, 1, 1, 2, 2]),
            ks=(1, 2),
        ),
        "eval.similarity_matrix": _fn(
            "eval.similarity_matrix", image_embeddings=f, text_embeddings=t
        ),
        "eval.paired_similarity": _fn("eval.paired_similarity", a=f, b=t),
        "eval.zero_shot_classifier": _fn(
            "eval.zero_shot_classifier", prompt_embeddings=torch.randn(3, 2, 8)
        ),
        "eval.zero_shot_accuracy": _fn(
            "eval.zero_shot_accuracy",
            image_embeddings=f,
            class_embeddings=_feat(3, 8, seed=18),
            labels=torch.tensor([0, 1, 2, 0]),
        ),
        "eval.compositional_accuracy": _fn(
            "eval.compositional_accuracy",
            positive_scores=torch.randn(4),
            negative_scores=torch.randn(4, 2),
            negative_types=["swap", "replace"],
        ),
        "eval.mean_iou": _fn(
            "eval.mean_iou",
            predictions=torch.randint(0, 3, (2, 4, 4)),
            targets=torch.randint(0, 3, (2, 4, 4)),
            num_classes=3,
        ),
        "eval.segmentation_labels": _fn("eval.segmentation_labels", scores=torch.randn(2, 3, 4, 4)),
        "adapters.interpolate_pos_embed": _fn(
            "adapters.interpolate_pos_embed",
            pos_embed=torch.randn(17, 8),
            image_size=24,
            patch_size=4,
        ),
        "adapters.text_token_mask": _fn(
            "adapters.text_token_mask", text=torch.tensor([[1, 5, 6, 2, 0, 0]]), eot_token_id=2
        ),
        "adapters.open_clip_image_tokens": _fn(
            "adapters.open_clip_image_tokens", model=_lazy(_tiny_clip), images=_images(2, 32)
        ),
        "adapters.open_clip_text_tokens": _fn(
            "adapters.open_clip_text_tokens",
            model=_lazy(_tiny_clip),
            text=torch.tensor([[49406, 5, 6, 49407, 0, 0, 0, 0]]).clamp(max=63),
        ),
        "adapters.open_clip_pos_embed": _fn(
            "adapters.open_clip_pos_embed", model=_lazy(_tiny_clip), image_size=48
        ),
        "adapters.open_clip_masked_image_tokens": _fn(
            "adapters.open_clip_masked_image_tokens",
            model=_lazy(_tiny_clip),
            images=_images(2, 32),
            keep_idx=keep,
        ),
        "adapters.timm_vit_tokens": _fn(
            "adapters.timm_vit_tokens", model=_lazy(_tiny_timm), images=_images(2, 32)
        ),
        "adapters.apply_lora": _fn("adapters.apply_lora", model=_lazy(_tiny_clip), rank=2),
        "data.shard_urls": _fn("data.shard_urls", source="shards/shapes-{000000..000003}.tar"),
    }
    return out


# --- bad values -----------------------------------------------------------------------------


def _bad_tensors(v: torch.Tensor) -> list[tuple[str, Any]]:
    out: list[tuple[str, Any]] = [
        ("None", None),
        ("list", v.tolist() if v.numel() < 200 else [1.0]),
        ("0-d", torch.tensor(1.0)),
        ("rank+1", v.unsqueeze(0)),
        ("meta", v.to("meta")),
    ]
    if v.dim() >= 1:
        out += [
            ("empty", v[:0]),
            ("single", v[:1]),
            ("rank-1", v.reshape(-1) if v.dim() > 1 else v[0]),
            ("stride0", v[:1].expand_as(v)),
            ("last+1", torch.cat([v, v[..., :1]], dim=-1)),
        ]
    if v.dim() >= 2:
        out.append(("noncontig", v.transpose(-1, -2).contiguous().transpose(-1, -2)))
        out.append(("transposed", v.transpose(-1, -2)))
    if v.is_floating_point():
        nan, inf = v.clone(), v.clone()
        if v.numel():
            nan.view(-1)[0] = float("nan")
            inf.view(-1)[-1] = float("inf")
        out += [
            ("nan", nan),
            ("inf", inf),
            ("huge", v * 1e30),
            ("zeros", torch.zeros_like(v)),
            ("int64", v.to(torch.int64)),
            ("bool", v > 0),
            ("float64", v.double()),
            ("float16", v.half()),
            ("bfloat16", v.bfloat16()),
            ("complex", v.to(torch.complex64)),
        ]
    elif v.dtype == torch.bool:
        out += [
            ("all_true", torch.ones_like(v)),
            ("all_false", torch.zeros_like(v)),
            ("int64", v.long()),
            ("float", v.float()),
        ]
    else:
        out += [
            ("negative", v - 1000),
            ("too_big", v + 10**6),
            ("float", v.float()),
            ("bool", v > 0),
            ("int32", v.int()),
        ]
    return out


def _bad_scalars(v: float | int) -> list[tuple[str, Any]]:
    return [
        ("zero", 0),
        ("negative", -1),
        ("nan", float("nan")),
        ("inf", float("inf")),
        ("-inf", float("-inf")),
        ("huge_float", 1e30),
        ("tiny", 1e-30),
        ("big_int", 10**6),
        ("giant_int", 10**12),
        ("fraction", 2.5),
        ("bool", True),
        ("str", "1"),
        ("None", None),
        ("nan_tensor", torch.tensor(float("nan"))),
        ("vector", torch.ones(2)),
    ]


_BAD_STRINGS: list[tuple[str, Any]] = [
    ("empty", ""),
    ("long", "a red cube " * 20000),
    ("unicode", "ñé 漢字 🙂 \u200b\x00 ümlaut"),
    ("invalid", "not-an-option"),
    ("int", 3),
    ("None", None),
]


def _bad_values(v: Any) -> list[tuple[str, Any]]:
    if isinstance(v, torch.Tensor):
        return _bad_tensors(v)
    if isinstance(v, bool):
        return [("int", 2), ("None", None), ("str", "yes")]
    if isinstance(v, (int, float)):
        return _bad_scalars(v)
    if isinstance(v, str):
        return _BAD_STRINGS
    if isinstance(v, random.Random):
        return [("None", None), ("int", 3), ("torch_gen", torch.Generator())]
    if isinstance(v, torch.Generator):
        return [("int", 3), ("str", "seed"), ("random", random.Random(0))]
    if isinstance(v, nn.Module):
        return [("linear", nn.Linear(2, 2)), ("None", None), ("int", 3)]
    if isinstance(v, (list, tuple)):
        out: list[tuple[str, Any]] = [("empty", type(v)()), ("None", None), ("str", "abc")]
        if v and isinstance(v[0], torch.Tensor):
            out += [
                ("single", type(v)(v[:1])),
                ("mismatched", type(v)([v[0], v[-1][:1]])),
                ("with_nan", type(v)([torch.full_like(v[0], float("nan")), *v[1:]])),
                ("with_None", type(v)([None, *v[1:]])),
            ]
        elif v and isinstance(v[0], str):
            out += [
                ("blank", type(v)([""] * len(v))),
                ("unicode", type(v)(["ñé 漢字 🙂 \x00"] * len(v))),
                ("long", type(v)(["a red cube left of a ball " * 4000])),
                ("ints", type(v)(range(len(v)))),
            ]
        elif v and isinstance(v[0], int):
            out += [("negative", type(v)([-1] * len(v))), ("huge", type(v)([10**12] * len(v)))]
        return out
    return [("None", None), ("int", 3)]


_WALK_POOL: list[tuple[str, Any]] = [
    ("None", None),
    ("int", 3),
    ("negative", -1),
    ("nan", float("nan")),
    ("str", "abc"),
    ("unicode", "ñé 漢字 🙂"),
    ("list", [1, 2]),
    ("dict", {"a": 1}),
    ("matrix", torch.randn(4, 8)),
    ("nan_matrix", torch.full((4, 8), float("nan"))),
    ("empty", torch.zeros(0, 8)),
    ("images", torch.randn(2, 3, 16, 16)),
    ("ints", torch.arange(4)),
    ("mask", torch.ones(4, 8, dtype=torch.bool)),
    ("module", nn.Linear(8, 8)),
]


# --- one call and its verdict ---------------------------------------------------------------


@contextlib.contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    def handler(signum: int, frame: Any) -> None:
        raise CallTimeout(f"call ran past {seconds} s")

    old = signal.signal(signal.SIGALRM, handler)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def _tensors(obj: Any, depth: int = 0) -> Iterator[torch.Tensor]:
    if depth > 4:
        return
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _tensors(value, depth + 1)
    elif isinstance(obj, (list, tuple)):
        for value in obj[:64]:
            yield from _tensors(value, depth + 1)
    elif isinstance(obj, float):
        yield torch.tensor(obj)


def _names_in(message: str, names: set[str]) -> bool:
    for n in names:
        # One-letter names ("a", "x") only count at the start of a phrase ("a must ...").
        pattern = rf"\b{re.escape(n)}\b" if len(n) > 1 else rf"(^|[\s(]){n} (must|and)\b"
        if re.search(pattern, message):
            return True
    return False


_ALL_NAMES: set[str] = set()


def _param_names(fn: Any) -> set[str]:
    names: set[str] = set()
    for target in (fn, getattr(fn, "forward", None), getattr(fn, "__init__", None)):
        if target is None:
            continue
        with contextlib.suppress(TypeError, ValueError):
            names |= set(inspect.signature(target).parameters) - {"self", "args", "kwargs"}
    return names


def _non_finite_input(kwargs: dict[str, Any]) -> bool:
    for value in kwargs.values():
        for tensor in _tensors(value):
            readable = tensor.is_floating_point() and not tensor.is_meta
            if readable and (not bool(torch.isfinite(tensor).all()) or tensor.abs().max() > 1e20):
                return True
    return False


def verdict(name: str, fn: Any, kwargs: dict[str, Any]) -> tuple[str, str]:
    """Call ``fn(**kwargs)``; return ``(kind, detail)``.

    ``kind`` is ``clear`` (ValueError/TypeError naming an argument of ``fn``, or
    FileNotFoundError), ``inner`` (one naming an argument of another public vlp callable
    that ``fn`` passed the value to), ``finite``, ``propagated`` (NaN/inf out of a
    data-moving or model-forward callable that got NaN/inf in) or ``other``.
    """
    try:
        with warnings.catch_warnings(), _time_limit(TIME_LIMIT_S):
            warnings.simplefilter("ignore")
            result = fn(**kwargs)
            if inspect.isgenerator(result):
                result = list(result)
    except CallTimeout as err:
        return "other", f"hang: {err}"
    except FileNotFoundError:
        return "clear", ""
    except (ValueError, TypeError) as err:
        message = str(err)
        if _names_in(message, _param_names(fn)):
            return "clear", ""
        if _names_in(message, _ALL_NAMES):
            return "inner", f"{type(err).__name__}: {message[:200]}"
        return "other", f"{type(err).__name__} naming no argument: {message[:300]}"
    except Exception as err:  # every other exception is a finding
        return "other", f"{type(err).__name__}: {str(err)[:300]}"
    for tensor in _tensors(result):
        if tensor.is_meta or not (tensor.is_floating_point() or tensor.is_complex()):
            continue
        nan = bool(torch.isnan(tensor).any())
        inf = bool(torch.isinf(tensor).any()) and name not in INF_OK
        if (nan or inf) and PROPAGATES.match(name) and _non_finite_input(kwargs):
            return "propagated", ""
        if nan:
            return "other", f"NaN in the result {tuple(tensor.shape)}"
        if inf:
            return "other", f"inf in the result {tuple(tensor.shape)}"
    return "finite", ""


# --- the cases -----------------------------------------------------------------------------


def public_callables() -> dict[str, Any]:
    """Every function and class (bar result types and exceptions) in the ``__all__``s."""
    out: dict[str, Any] = {}
    for package in SUBPACKAGES:
        module = importlib.import_module(f"vlp.{package}")
        for attr in module.__all__:
            obj = getattr(module, attr)
            name = f"{package}.{attr}"
            if name in SKIP or not callable(obj):
                continue
            if inspect.isclass(obj) and (
                issubclass(obj, (tuple, BaseException)) or obj.__module__ == "typing"
            ):
                continue
            if not (inspect.isclass(obj) or inspect.isfunction(obj)):
                continue  # typing aliases (Literal[...]) are callable objects too
            out[name] = obj
            _ALL_NAMES.update(_param_names(obj))
    return out


class Fuzzer:
    """Draws cases with hypothesis, runs them, counts the verdicts."""

    def __init__(self, only: frozenset[str] | None = None) -> None:
        self.baselines = _baselines()
        self.callables = public_callables()
        if only:  # restrict both kinds of cases to the named callables
            unknown = only - set(self.callables) - set(self.baselines)
            if unknown:
                raise SystemExit(f"--only: no such callable: {sorted(unknown)}")
            self.baselines = {k: v for k, v in self.baselines.items() if k in only}
            self.callables = {k: v for k, v in self.callables.items() if k in only}
        self.counts: Counter[str] = Counter()
        self.findings: list[dict[str, str]] = []
        self.inner: list[dict[str, str]] = []
        self.baseline_names = sorted(self.baselines)
        self.callable_names = sorted(self.callables)
        self._cache: dict[str, tuple[Any, dict[str, Any]]] = {}

    def _baseline(self, name: str) -> tuple[Any, dict[str, Any]]:
        # Fresh objects each time (a call may mutate a module); built lazily.
        fn, kwargs = self.baselines[name]()
        kwargs = {k: v() if getattr(v, "lazy", False) else v for k, v in kwargs.items()}
        return fn, kwargs

    def record(self, name: str, case: str, kind: str, detail: str) -> None:
        self.counts["inputs"] += 1
        self.counts[kind] += 1
        if kind == "other":
            self.findings.append({"callable": name, "case": case, "outcome": detail})
        elif kind == "inner":
            self.inner.append({"callable": name, "case": case, "outcome": detail})

    def run_one(self, data: st.DataObject) -> None:
        walk = not self.baseline_names or (
            bool(self.callable_names) and data.draw(st.integers(0, 3), label="walk?") == 0
        )
        if walk:
            name = data.draw(st.sampled_from(self.callable_names), label="callable")
            fn = self.callables[name]
            try:
                params = [
                    p
                    for p in inspect.signature(fn).parameters.values()
                    if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
                ]
            except (TypeError, ValueError):
                params = []
            kwargs: dict[str, Any] = {}
            labels = []
            for p in params:
                if p.default is not p.empty and (
                    p.name in WALK_KEEP or data.draw(st.booleans(), label=p.name)
                ):
                    continue  # keep the default
                label, value = data.draw(st.sampled_from(_WALK_POOL), label=p.name)
                kwargs[p.name] = value
                labels.append(f"{p.name}={label}")
            kind, detail = verdict(name, fn, kwargs)
            self.record(name, "walk: " + ", ".join(labels), kind, detail)
            return
        name = data.draw(st.sampled_from(self.baseline_names), label="baseline")
        fn, kwargs = self._baseline(name)
        corrupt = data.draw(st.sampled_from([None, *sorted(kwargs)]), label="argument")
        if corrupt is None:
            kind, detail = verdict(name, fn, kwargs)
            if kind not in ("finite", "propagated"):  # the valid call itself must work
                kind, detail = "other", f"valid call failed: {detail or kind}"
            self.record(name, "valid call", kind, detail)
            return
        options = _bad_values(kwargs[corrupt])
        label, value = data.draw(st.sampled_from(options), label=corrupt)
        kwargs[corrupt] = value
        kind, detail = verdict(name, fn, kwargs)
        self.record(name, f"{corrupt}={label}", kind, detail)

    def run(self, examples: int, seed: int = 0) -> None:
        @settings(
            max_examples=examples,
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=list(HealthCheck),
            phases=[__import__("hypothesis").Phase.generate],
        )
        @given(st.data())
        def property_(data: st.DataObject) -> None:
            self.run_one(data)

        random.seed(seed)
        torch.manual_seed(seed)
        property_()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=1000)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument(
        "--only",
        default="",
        help="comma-separated callables (e.g. data.shard_urls,losses.SigLipLoss) to fuzz alone",
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp, contextlib.chdir(tmp):
        only = frozenset(n.strip() for n in args.only.split(",") if n.strip())
        fuzzer = Fuzzer(only or None)
        fuzzer.run(args.examples)
    report = {
        "examples": args.examples,
        "callables": len(fuzzer.callables),
        "baselines": len(fuzzer.baselines),
        "inputs": fuzzer.counts["inputs"],
        "clear_errors": fuzzer.counts["clear"],
        "clear_errors_inner_name": fuzzer.counts["inner"],
        "finite_results": fuzzer.counts["finite"],
        "propagated_non_finite": fuzzer.counts["propagated"],
        "other": fuzzer.counts["other"],
        "seconds": round(time.perf_counter() - start, 1),
        "findings": fuzzer.findings,
        "inner_name_errors": fuzzer.inner,
    }
    text = json.dumps(report, indent=1)
    if args.json is not None:
        args.json.write_text(text)
    summary = {k: v for k, v in report.items() if k not in ("findings", "inner_name_errors")}
    print(json.dumps(summary))
    for finding in fuzzer.findings[:200]:
        print(f"{finding['callable']:45s} {finding['case'][:60]:60s} {finding['outcome'][:200]}")
    return 0 if not fuzzer.findings else 1


if __name__ == "__main__":
    sys.exit(main())
