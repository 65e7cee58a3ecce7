"""Pieces every vlp recipe shares. Copy what you need; nothing here is a framework.

A recipe (``examples/train_clip.py`` and the method recipes) does::

    import common
    model = common.tiny_clip()                        # open_clip.CLIP, random init, offline
    tokenize = common.tokenizer()                     # list[str] -> (B, 32) int64
    for step, batch in zip(range(steps), common.train_batches(args.data, batch_size=64)):
        images = common.to_model_input(batch["image"], device)
        ...
    metrics = common.evaluate(model, tokenize, device=device)
    common.print_table({"clip": metrics})
    common.save_checkpoint({"model": model, "logit_scale": scale}, "clip.safetensors")

API (all plain functions):

- ``TINY_CLIP``: the model config (a dict of ``open_clip.CLIP`` arguments).
  ``tiny_clip(**overrides) -> open_clip.CLIP`` builds it randomly initialised, offline.
- ``tokenizer(context_length=32)``: open_clip's BPE tokenizer (ships with open_clip).
- ``to_model_input(images_uint8, device) -> float tensor``: scale and normalise.
- ``train_batches(data=None, *, batch_size, seed, ...)``: endless batches of the
  embedded data (``data=None``) or of WebDataset shards (``data=DIR``), split across
  ``torchrun`` ranks. A batch is :func:`vlp.data.shapes.collate_shapes` output.
- ``evaluate(model, tokenize, *, device, ...) -> dict[str, float]``: retrieval R@1/5/10
  in both directions, zero-shot shape and colour accuracy, compositional accuracy per
  hard-negative type, all computed with :mod:`vlp.eval`. ``encode_images`` /
  ``encode_texts`` are the batched encoders it uses.
- ``format_table(runs) / print_table(runs)``: metrics of several runs side by side.
- ``save_checkpoint(modules, path, metadata)`` / ``load_checkpoint(modules, path)``:
  safetensors files holding several modules under prefixes.
- ``init_distributed(device) / cleanup_distributed()``: ``torchrun`` set-up.
- ``plot_curves(history, path)``: training curves (needs matplotlib).
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import open_clip
import torch
import torch.distributed as dist
import torch.nn.functional as F
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from safetensors.torch import load_file, save_file
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler

from vlp.data import shapes_from_shards
from vlp.data.shapes import (
    COLOURS,
    NEGATIVE_TYPES,
    SHAPES,
    ShapesDataset,
    class_prompts,
    collate_shapes,
)
from vlp.distributed import get_rank, get_world_size
from vlp.eval import (
    compositional_accuracy,
    paired_similarity,
    retrieval_recall,
    similarity_matrix,
    zero_shot_accuracy,
    zero_shot_classifier,
)

# A ViT with 64 patch tokens (64x64 images, 8x8 patches) and a 2-layer text transformer,
# both 64 wide: ~3.5M parameters, 3.2M of them the token embedding of open_clip's
# 49408-word BPE vocabulary. Small enough for a CPU, big enough to learn the data set.
TINY_CLIP: dict[str, Any] = {
    "embed_dim": 64,
    "vision_cfg": {
        "image_size": 64,
        "patch_size": 8,
        "width": 64,
        "layers": 2,
        "head_width": 32,
        "mlp_ratio": 2.0,
    },
    "text_cfg": {
        "context_length": 32,
        "vocab_size": 49408,
        "width": 64,
        "heads": 2,
        "layers": 2,
        "mlp_ratio": 2.0,
    },
}

# Image normalisation: the shapes images have mean ~0.38 per channel (a grey background)
# and std ~0.1; a wider std keeps the saturated object colours within a few units.
IMAGE_MEAN = (0.38, 0.38, 0.38)
IMAGE_STD = (0.2, 0.2, 0.2)


def tiny_clip(**overrides: Any) -> open_clip.CLIP:
    """Build the tiny open_clip model, randomly initialised, without any download.

    ``overrides`` replace top-level keys of ``TINY_CLIP``; ``vision_cfg`` / ``text_cfg``
    dicts are merged into the defaults (``tiny_clip(vision_cfg={"layers": 4})``).
    """
    cfg = {**TINY_CLIP, **overrides}
    vision = {**TINY_CLIP["vision_cfg"], **overrides.get("vision_cfg", {})}
    text = {**TINY_CLIP["text_cfg"], **overrides.get("text_cfg", {})}
    return open_clip.CLIP(
        embed_dim=cfg["embed_dim"],
        vision_cfg=CLIPVisionCfg(**vision),
        text_cfg=CLIPTextCfg(**text),
        **{k: v for k, v in cfg.items() if k not in ("embed_dim", "vision_cfg", "text_cfg")},
    )


def tokenizer(context_length: int = 32) -> Callable[[Sequence[str]], torch.Tensor]:
    """open_clip's BPE tokenizer (bundled with open_clip, works offline)."""
    return open_clip.tokenizer.SimpleTokenizer(context_length=context_length)


def to_model_input(images: torch.Tensor, device: torch.device | str) -> torch.Tensor:
    """``(B, 3, H, W)`` uint8 images to normalised float32 on ``device``."""
    x = images.to(device, non_blocking=True).float().div_(255)
    mean = torch.tensor(IMAGE_MEAN, device=x.device).view(1, 3, 1, 1)
    std = torch.tensor(IMAGE_STD, device=x.device).view(1, 3, 1, 1)
    return (x - mean) / std


def train_batches(
    data: str | None = None,
    *,
    batch_size: int = 64,
    seed: int = 0,
    num_samples: int = 1_000_000,
    image_size: int = 64,
    num_captions: int = 1,
    workers: int = 0,
) -> Iterator[dict[str, Any]]:
    """Endless training batches, each rank of a ``torchrun`` job getting its own samples.

    ``data=None`` generates the embedded shapes ``train`` split on the fly (a
    ``DistributedSampler`` splits it across ranks); ``data=DIR`` (or a brace pattern)
    streams WebDataset shards written by ``python -m vlp.data.shapes write`` through
    :func:`vlp.data.shapes_from_shards` (shards split across ranks, shuffled in a buffer).
    ``batch_size`` is per rank.
    """
    rank, world = get_rank(), get_world_size()
    if data:
        for epoch in itertools.count():
            pipeline = shapes_from_shards(data, shuffle=2000, seed=seed, epoch=epoch)
            loader = DataLoader(
                pipeline, batch_size=batch_size, collate_fn=collate_shapes, num_workers=workers
            )
            empty = True
            for batch in loader:
                empty = False
                yield batch
            if empty:
                raise ValueError(
                    f"rank {rank} read no samples from {data!r} (fewer shards than ranks?)"
                )
    dataset = ShapesDataset(
        num_samples, split="train", seed=seed, image_size=image_size, num_captions=num_captions
    )
    sampler = DistributedSampler(dataset, num_replicas=world, rank=rank, seed=seed, drop_last=True)
    for epoch in itertools.count():
        sampler.set_epoch(epoch)
        yield from DataLoader(
            dataset,
            batch_size=batch_size,
            sampler=sampler,
            collate_fn=collate_shapes,
            num_workers=workers,
            drop_last=True,
        )


@torch.no_grad()
def encode_images(
    model: nn.Module, images: torch.Tensor, *, device: torch.device | str, batch_size: int = 500
) -> torch.Tensor:
    """L2-normalised image embeddings ``(N, D)`` (float32, on the CPU) of uint8 images."""
    out = [
        model.encode_image(to_model_input(images[i : i + batch_size], device)).float().cpu()
        for i in range(0, len(images), batch_size)
    ]
    return F.normalize(torch.cat(out), dim=-1)


@torch.no_grad()
def encode_texts(
    model: nn.Module,
    tokenize: Callable[[Sequence[str]], torch.Tensor],
    texts: Sequence[str],
    *,
    device: torch.device | str,
    batch_size: int = 1000,
) -> torch.Tensor:
    """L2-normalised text embeddings ``(N, D)`` (float32, on the CPU)."""
    out = [
        model.encode_text(tokenize(list(texts[i : i + batch_size])).to(device)).float().cpu()
        for i in range(0, len(texts), batch_size)
    ]
    return F.normalize(torch.cat(out), dim=-1)


def _samples(dataset: ShapesDataset) -> dict[str, Any]:
    return collate_shapes([dataset[i] for i in range(len(dataset))])


@torch.no_grad()
def evaluate(
    model: nn.Module,
    tokenize: Callable[[Sequence[str]], torch.Tensor],
    *,
    device: torch.device | str = "cpu",
    num_test: int = 1000,
    num_compositional: int = 1000,
    captions_per_image: int = 5,
    image_size: int = 64,
    seed: int = 12345,
) -> dict[str, float]:
    """The evaluation table of every recipe, as ``{metric: fraction}``.

    - ``i2t R@k`` / ``t2i R@k`` (k = 1, 5, 10): retrieval on ``num_test`` held-back
      ``test`` images with ``captions_per_image`` captions each (chance R@1: 1/num_test).
    - ``zero-shot shape`` / ``zero-shot colour``: the single-object ``test`` images
      classified against prompt-ensembled class embeddings (chance 1/6 and 1/8).
    - ``comp <type>`` and ``comp overall``: compositional accuracy (the image scores its
      caption above the hard negative) on ``num_compositional`` images built from
      colour-shape pairs never seen in training (chance 50%).

    The data is fixed by ``seed`` (a seed the training data never uses by default).
    """
    was_training = model.training
    model.eval()
    metrics: dict[str, float] = {}

    test = _samples(
        ShapesDataset(
            num_test,
            split="test",
            seed=seed,
            image_size=image_size,
            num_captions=captions_per_image,
        )
    )
    images = encode_images(model, test["image"], device=device)
    captions = [c for caps in test["captions"] for c in caps]
    owner = torch.arange(num_test).repeat_interleave(captions_per_image)
    texts = encode_texts(model, tokenize, captions, device=device)
    recall = retrieval_recall(similarity_matrix(images, texts), owner, ks=(1, 5, 10))
    for k in (1, 5, 10):
        metrics[f"i2t R@{k}"] = recall[f"image_to_text_R@{k}"]
    for k in (1, 5, 10):
        metrics[f"t2i R@{k}"] = recall[f"text_to_image_R@{k}"]

    single = [i for i, s in enumerate(test["scene"]) if len(s["objects"]) == 1]
    for attribute, classes in (("shape", SHAPES), ("colour", COLOURS)):
        prompts = class_prompts(attribute)
        emb = torch.stack(
            [encode_texts(model, tokenize, prompts[c], device=device) for c in classes]
        )
        labels = torch.tensor(
            [classes.index(test["scene"][i]["objects"][0][attribute]) for i in single]
        )
        acc = zero_shot_accuracy(images[single], zero_shot_classifier(emb), labels)
        metrics[f"zero-shot {attribute}"] = acc["top1"]

    comp = _samples(
        ShapesDataset(num_compositional, split="compositional", seed=seed, image_size=image_size)
    )
    comp_images = encode_images(model, comp["image"], device=device)
    positive = paired_similarity(
        comp_images, encode_texts(model, tokenize, comp["caption"], device=device)
    )
    negative = torch.stack(
        [
            paired_similarity(
                comp_images,
                encode_texts(model, tokenize, [n[t] for n in comp["negatives"]], device=device),
            )
            for t in NEGATIVE_TYPES
        ],
        dim=1,
    )
    result = compositional_accuracy(positive, negative, list(NEGATIVE_TYPES))
    for t in NEGATIVE_TYPES:
        metrics[f"comp {t}"] = result.per_type[t]
    metrics["comp mean"] = sum(result.per_type.values()) / len(result.per_type)
    model.train(was_training)
    return metrics


def format_table(runs: Mapping[str, Mapping[str, float]]) -> str:
    """Metrics of several runs side by side (percentages), one row per metric."""
    names = list(runs)
    metrics = list(dict.fromkeys(m for r in runs.values() for m in r))
    width = max(len(m) for m in metrics) + 2
    cols = [max(8, len(n) + 2) for n in names]
    lines = ["metric".ljust(width) + "".join(n.rjust(c) for n, c in zip(names, cols))]
    lines.append("-" * len(lines[0]))
    for m in metrics:
        cells = [
            (f"{100 * runs[n][m]:.1f}" if m in runs[n] else "-").rjust(c)
            for n, c in zip(names, cols)
        ]
        lines.append(m.ljust(width) + "".join(cells))
    return "\n".join(lines)


def print_table(runs: Mapping[str, Mapping[str, float]]) -> None:
    """Print :func:`format_table`."""
    print(format_table(runs))


def save_checkpoint(
    modules: Mapping[str, nn.Module], path: str, metadata: Mapping[str, str] | None = None
) -> None:
    """Save several modules into one safetensors file, keys prefixed ``"{name}."``."""
    state = {
        f"{name}.{k}": v.detach().cpu().contiguous().clone()
        for name, module in modules.items()
        for k, v in module.state_dict().items()
    }
    save_file(state, path, metadata=dict(metadata or {}))


def load_checkpoint(modules: Mapping[str, nn.Module], path: str) -> None:
    """Load a :func:`save_checkpoint` file into the same modules (strict)."""
    state = load_file(path)
    for name, module in modules.items():
        prefix = f"{name}."
        module.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        )


def init_distributed(device: str) -> torch.device:
    """Initialise ``torch.distributed`` when run under ``torchrun``; return this rank's device.

    Uses NCCL for ``cuda`` (one GPU per ``LOCAL_RANK``) and gloo on the CPU. Outside
    ``torchrun`` it does nothing and returns ``torch.device(device)``.
    """
    if "WORLD_SIZE" not in os.environ or int(os.environ["WORLD_SIZE"]) == 1:
        return torch.device(device)
    if device.startswith("cuda"):
        local = int(os.environ.get("LOCAL_RANK", 0))
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        return torch.device("cuda", local)
    dist.init_process_group("gloo")
    return torch.device(device)


def cleanup_distributed() -> None:
    """Destroy the process group if :func:`init_distributed` created one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def plot_curves(history: Mapping[str, Sequence[float]], path: str) -> None:
    """Plot each training curve of ``history`` (e.g. loss, logit scale) in its own panel."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(history), figsize=(4 * len(history), 3), squeeze=False)
    for ax, (name, values) in zip(axes[0], history.items()):
        ax.plot(range(1, len(values) + 1), values)
        ax.set_xlabel("step")
        ax.set_title(name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
