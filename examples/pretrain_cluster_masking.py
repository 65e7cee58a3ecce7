"""Cluster masking (Wei et al., CVPR 2024) vs random patch dropout (FLIP) vs no masking.

The tiny open_clip CLIP of ``examples/train_clip.py`` trains three times from the same
initialisation on the same batches, for the same number of steps:

- ``none``: every patch (64 per image);
- ``cluster``: ``vlp.masking.ClusterMasking``: a few anchor patches per image (3%), every
  patch whose raw-pixel correlation with an anchor exceeds the threshold is masked; the
  image encoder sees the visible patches only (fillers hidden by a key-padding mask),
  through ``vlp.adapters.MaskedImageEncoder`` around the unmodified open_clip model;
- ``random``: ``vlp.masking.patch_dropout`` keeping, per image, the mean number of
  patches cluster masking leaves visible (the same kept-token budget), measured on a
  held-out batch before training.

It prints the evaluation table of every run plus training images/s and vision tokens/s
(sequence slots through the image tower, CLS and fillers included), per wall-clock second
and per CPU second of the process.

    python examples/pretrain_cluster_masking.py --threads 1            # CPU, minutes
    python examples/pretrain_cluster_masking.py --runs cluster --threshold 0.3
    python examples/pretrain_cluster_masking.py --target-ratio 0.8     # calibrate tau instead
    python examples/pretrain_cluster_masking.py --data shards/ --device cuda --steps 5000

The masking features are computed, as in the paper, on CLIP-normalised pixels (the
released code's inputs). The recipe's own model input (``to_model_input``) uses
one mean and std for all channels, which maps the data set's grey background to flat
patches, and flat patches never cluster (``vlp.masking.patch_features``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from torch.utils.data import DataLoader

from vlp.adapters import MaskedImageEncoder
from vlp.augment import CLIP_MEAN, CLIP_STD
from vlp.data import shapes_from_shards
from vlp.data.shapes import ShapesDataset, collate_shapes
from vlp.eval import evaluate_shapes, metrics_table
from vlp.losses import LogitScale, clip_loss
from vlp.masking import ClusterMasking, calibrate_threshold, cluster_mask, num_kept, patch_dropout
from vlp.optim import param_groups, warmup_cosine_scheduler

RUNS = ("none", "random", "cluster")

parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
)
parser.add_argument("--steps", type=int, default=300, help="optimiser steps per run")
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--lr", type=float, default=2e-3)
parser.add_argument("--weight-decay", type=float, default=0.1)
parser.add_argument("--warmup", type=int, default=30, help="linear warm-up steps")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--runs", default=",".join(RUNS), help="comma-separated subset of " + str(RUNS))
parser.add_argument(
    "--threshold", type=float, default=0.5, help="cluster threshold tau (the released code's 0.5)"
)
parser.add_argument(
    "--target-ratio", type=float, default=None, help="calibrate tau to this mean ratio instead"
)
parser.add_argument("--min-ratio", type=float, default=0.3, help="floor on each image's ratio")
parser.add_argument("--anchor-fraction", type=float, default=0.03)
parser.add_argument("--backend", default="auto", help="cluster_scores backend")
parser.add_argument("--data", default=None, help="WebDataset shards; default: generate")
parser.add_argument("--device", default="cpu")
parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
parser.add_argument("--eval-size", type=int, default=1000, help="images per evaluation split")
parser.add_argument("--json", default=None, help="write metrics and throughput as JSON here")
args = parser.parse_args()

runs = [r for r in args.runs.split(",") if r]
if not runs or any(r not in RUNS for r in runs):
    parser.error(f"--runs must be a comma-separated subset of {RUNS}, got {args.runs!r}")
if args.threads:
    torch.set_num_threads(args.threads)
device = torch.device(args.device)
patch, num_patches = 8, 64  # the model's 8x8 patches of a 64x64 image


def make_model() -> open_clip.CLIP:
    """The baseline recipe's tiny open_clip CLIP (examples/train_clip.py), random init."""
    return open_clip.CLIP(
        embed_dim=64,
        vision_cfg=CLIPVisionCfg(
            image_size=64, patch_size=patch, width=64, layers=2, head_width=32, mlp_ratio=2.0
        ),
        text_cfg=CLIPTextCfg(
            context_length=32, vocab_size=49408, width=64, heads=2, layers=2, mlp_ratio=2.0
        ),
    )


def train_batches(seed: int, batch_size: int) -> Iterator[dict[str, Any]]:
    """Endless training batches: WebDataset shards (``--data``) or generated samples."""
    if args.data:
        for epoch in itertools.count():
            pipeline = shapes_from_shards(args.data, shuffle=2000, seed=seed, epoch=epoch)
            yield from DataLoader(pipeline, batch_size=batch_size, collate_fn=collate_shapes)
    dataset = ShapesDataset(1_000_000, split="train", seed=seed)
    for epoch in itertools.count():  # a fresh permutation per epoch of a million samples
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed + epoch))
        yield from DataLoader(
            dataset, batch_size=batch_size, sampler=order.tolist(), collate_fn=collate_shapes,
            drop_last=True,
        )  # fmt: skip


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """The model's input (as the baseline recipe): [0, 1], then mean 0.38 and std 0.2."""
    return (images.to(device).float().div_(255) - 0.38) / 0.2


def clip_normalised(images_uint8: torch.Tensor) -> torch.Tensor:
    """The masking features' input: pixels normalised with the CLIP mean and std."""
    x = images_uint8.to(device).float().div_(255)
    mean = torch.tensor(CLIP_MEAN, device=device).view(1, 3, 1, 1)
    std = torch.tensor(CLIP_STD, device=device).view(1, 3, 1, 1)
    return (x - mean) / std


# Threshold and random-dropout budget, from a batch the training never sees.
probe = next(train_batches(args.seed + 999, 256))
probe_images = clip_normalised(probe["image"])
gen = torch.Generator(device=device).manual_seed(args.seed + 1)
if args.target_ratio is not None:
    probe_mask = cluster_mask(
        probe_images, patch, 1.0, anchor_fraction=args.anchor_fraction, generator=gen
    )
    tau = float(
        calibrate_threshold(
            probe_mask.scores, args.target_ratio, min_ratio=args.min_ratio
        ).threshold
    )
else:
    tau = args.threshold
probe_masking = ClusterMasking(
    patch, threshold=tau, min_ratio=args.min_ratio, anchor_fraction=args.anchor_fraction,
    generator=gen, backend=args.backend,
).train()  # fmt: skip
probe_masking(probe_images)
assert probe_masking.last_ratio is not None
cluster_ratio = float(probe_masking.last_ratio.mean())
random_ratio = min(1 - 1 / num_patches, cluster_ratio)
print(
    f"cluster masking: tau = {tau:.4f}, mean mask ratio {cluster_ratio:.3f} on a held-out batch; "
    f"random dropout keeps {num_kept(num_patches, random_ratio)} of {num_patches} patches"
)


def train(run: str) -> dict[str, Any]:
    """Train one run from the common initialisation; return metrics and throughput."""
    torch.manual_seed(args.seed)
    model = make_model().to(device)
    model.logit_scale.requires_grad_(False)
    logit_scale = LogitScale(init_scale=1 / 0.07, max_scale=100.0).to(device)
    tokenize = open_clip.tokenizer.SimpleTokenizer(context_length=model.context_length)
    encoder = MaskedImageEncoder(model).train()
    optimizer = torch.optim.AdamW(
        param_groups(model, logit_scale, weight_decay=args.weight_decay),
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=args.warmup, total_steps=args.steps)
    g = torch.Generator(device=device).manual_seed(args.seed + 2)
    masking = ClusterMasking(
        patch, threshold=tau, min_ratio=args.min_ratio, anchor_fraction=args.anchor_fraction,
        generator=g, backend=args.backend,
    ).train()  # fmt: skip
    batches = train_batches(args.seed, args.batch_size)
    losses, ratios, slots = [], [], 0
    start, cpu_start = time.perf_counter(), time.process_time()
    for _ in range(args.steps):
        batch = next(batches)
        images = to_model_input(batch["image"])
        b = images.shape[0]
        if run == "none":
            out = encoder(images)
            ratios.append(0.0)
        elif run == "random":
            keep = patch_dropout(b, num_patches, random_ratio, generator=g, device=device)
            out = encoder(images, keep)
            ratios.append(1 - keep.shape[1] / num_patches)
        else:
            keep, pad = masking(clip_normalised(batch["image"]))
            out = encoder(images, keep, pad)
            assert masking.last_ratio is not None
            ratios.append(float(masking.last_ratio.mean()))
        slots += b * (1 + out.tokens.shape[1])
        texts = tokenize(batch["caption"]).to(device)
        loss = clip_loss(
            F.normalize(out.pooled, dim=-1),
            F.normalize(model.encode_text(texts), dim=-1),
            logit_scale(),
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        logit_scale.clamp_()
        losses.append(loss.item())
    seconds = time.perf_counter() - start
    cpu_seconds = time.process_time() - cpu_start  # robust to other jobs on the machine
    print(f"{run}: {args.steps} steps in {seconds:.0f} s", flush=True)
    metrics = evaluate_shapes(
        model, tokenize, preprocess=to_model_input, device=device,
        num_test=args.eval_size, num_compositional=args.eval_size,
    )  # fmt: skip
    return {
        "metrics": metrics,
        "loss": losses,
        "mask_ratio": sum(ratios) / len(ratios),
        "train_seconds": seconds,
        "train_cpu_seconds": cpu_seconds,
        "images_per_s": args.steps * args.batch_size / seconds,
        "tokens_per_s": slots / seconds,
        "images_per_cpu_s": args.steps * args.batch_size / cpu_seconds,
        "tokens_per_cpu_s": slots / cpu_seconds,
        "tokens_per_image": slots / (args.steps * args.batch_size),
    }


results = {run: train(run) for run in runs}
print()
print(metrics_table({run: r["metrics"] for run, r in results.items()}))
print()
# Per wall second, and per CPU second of this process (what a busy machine does not skew).
print(
    f"{'run':10}{'mask ratio':>11}{'tokens/img':>11}{'images/s':>10}{'tokens/s':>10}"
    f"{'img/cpu-s':>10}{'tok/cpu-s':>10}{'loss':>7}"
)
for run, r in results.items():
    tail = r["loss"][-20:]
    print(
        f"{run:10}{r['mask_ratio']:11.3f}{r['tokens_per_image']:11.1f}{r['images_per_s']:10.1f}"
        f"{r['tokens_per_s']:10.0f}{r['images_per_cpu_s']:10.1f}{r['tokens_per_cpu_s']:10.0f}"
        f"{sum(tail) / len(tail):7.3f}"
    )
if args.json:
    Path(args.json).write_text(
        json.dumps({"threshold": tau, "cluster_ratio": cluster_ratio, "runs": results}, indent=1)
    )
