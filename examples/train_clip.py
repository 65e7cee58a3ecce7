"""Baseline recipe: CLIP (Radford et al., ICML 2021) trained from scratch on the shapes data.

A tiny open_clip ViT, randomly initialised, learns from the embedded procedural data with
``vlp.losses.clip_loss`` and a learnable ``vlp.losses.LogitScale``, then prints retrieval,
zero-shot and compositional accuracy (``vlp.eval.evaluate_shapes``).

    python examples/train_clip.py                                  # CPU, a few minutes
    python examples/train_clip.py --plot clip.png --out clip.safetensors
    python -m vlp.data.shapes write --out shards/ --num 100000     # WebDataset shards
    python examples/train_clip.py --data shards/ --device cuda --steps 5000 --batch-size 256
    torchrun --nproc-per-node 4 examples/train_clip.py --data shards/ --device cuda
    python examples/train_clip.py --batch-size 1024 --micro-batch 128   # gradient caching

Under torchrun every rank trains on its own shards (or its own slice of the generated
data); ``clip_loss`` gathers the features of all ranks with gradient, so the loss is the
global-batch loss, and only rank 0 evaluates and saves.

``--micro-batch M`` trains with ``vlp.losses.GradCache``: each step's batch is encoded M
samples at a time, so activation memory is that of M samples while the loss and the
gradients stay exactly those of the whole batch (see docs/distributed.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.distributed as dist
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from safetensors.torch import save_file
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, DistributedSampler

from vlp.data import shapes_from_shards
from vlp.data.shapes import ShapesDataset, collate_shapes
from vlp.distributed import get_rank, get_world_size
from vlp.eval import evaluate_shapes, metrics_table
from vlp.losses import GradCache, LogitScale, clip_loss
from vlp.optim import param_groups, warmup_cosine_scheduler

parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
)
parser.add_argument("--steps", type=int, default=1000, help="optimiser steps")
parser.add_argument("--batch-size", type=int, default=64, help="batch size per rank")
parser.add_argument("--lr", type=float, default=2e-3)
parser.add_argument("--weight-decay", type=float, default=0.1)
parser.add_argument("--warmup", type=int, default=100, help="linear warm-up steps")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument(
    "--data", default=None, help="WebDataset shards (dir or brace pattern); default: generate"
)
parser.add_argument("--device", default="cpu", help="cpu or cuda")
parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
parser.add_argument("--workers", type=int, default=0, help="DataLoader workers")
parser.add_argument("--eval-size", type=int, default=1000, help="images per evaluation split")
parser.add_argument("--out", default=None, help="save a safetensors checkpoint here")
parser.add_argument("--plot", default=None, help="save training curves (png, matplotlib) here")
parser.add_argument("--json", default=None, help="write the metrics as JSON here")
parser.add_argument(
    "--micro-batch",
    type=int,
    default=None,
    help="gradient caching: encode this many samples at a time (exact full-batch gradients)",
)
args = parser.parse_args()

if args.threads:
    torch.set_num_threads(args.threads)

# ------------------------------------------------------------------ torchrun set-up
# Under torchrun (WORLD_SIZE > 1) join the process group: NCCL with one GPU per
# LOCAL_RANK, gloo on the CPU. A plain `python` run is a world of one.
device = torch.device(args.device)
if int(os.environ.get("WORLD_SIZE", "1")) > 1:
    if args.device.startswith("cuda"):
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl")
    else:
        dist.init_process_group("gloo")
rank, world = get_rank(), get_world_size()
torch.manual_seed(args.seed)  # same initial weights on every rank

# ------------------------------------------------------------------ model
# open_clip's CLIP, unmodified: a ViT on 64x64 images with 8x8 patches (64 tokens), 2 layers,
# width 64, and a 2-layer text transformer with a 32-token context; ~3.5M parameters, 3.2M of
# them the token embedding of the 49408-word BPE vocabulary. The temperature lives in vlp's
# LogitScale, so open_clip's own logit_scale is frozen (and unused).
model = open_clip.CLIP(
    embed_dim=64,
    vision_cfg=CLIPVisionCfg(
        image_size=64, patch_size=8, width=64, layers=2, head_width=32, mlp_ratio=2.0
    ),
    text_cfg=CLIPTextCfg(
        context_length=32, vocab_size=49408, width=64, heads=2, layers=2, mlp_ratio=2.0
    ),
).to(device)
model.logit_scale.requires_grad_(False)
logit_scale = LogitScale(init_scale=1 / 0.07, max_scale=100.0).to(device)
tokenize = open_clip.tokenizer.SimpleTokenizer(context_length=model.context_length)
train_model = DistributedDataParallel(model) if world > 1 else model

# AdamW without weight decay on gains, biases, embeddings and the temperature (as CLIP);
# linear warm-up, then cosine decay to zero.
optimizer = torch.optim.AdamW(
    param_groups(model, logit_scale, weight_decay=args.weight_decay),
    lr=args.lr,
    betas=(0.9, 0.98),
    eps=1e-6,
)
scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=args.warmup, total_steps=args.steps)


# ------------------------------------------------------------------ data
def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` images to normalised float32 on the device.

    The shapes images have a grey background (mean about 0.38 per channel); a std of 0.2,
    wider than the data's, keeps the saturated object colours within a few units.
    """
    return (images.to(device).float().div_(255) - 0.38) / 0.2


def train_batches() -> Iterator[dict[str, Any]]:
    """Endless batches for this rank: WebDataset shards (``--data``) or generated samples."""
    if args.data:  # shards are split across ranks and workers by the pipeline
        for epoch in itertools.count():
            pipeline = shapes_from_shards(args.data, shuffle=2000, seed=args.seed, epoch=epoch)
            loader = DataLoader(
                pipeline,
                batch_size=args.batch_size,
                collate_fn=collate_shapes,
                num_workers=args.workers,
            )
            empty = True
            for batch in loader:
                empty = False
                yield batch
            if empty:
                raise ValueError(f"rank {rank} read no samples from {args.data!r}")
    dataset = ShapesDataset(1_000_000, split="train", seed=args.seed)
    sampler = DistributedSampler(
        dataset, num_replicas=world, rank=rank, seed=args.seed, drop_last=True
    )
    for epoch in itertools.count():
        sampler.set_epoch(epoch)
        yield from DataLoader(
            dataset,
            batch_size=args.batch_size,
            sampler=sampler,
            collate_fn=collate_shapes,
            num_workers=args.workers,
            drop_last=True,
        )


# ------------------------------------------------------------------ training
batches = train_batches()
grad_cache = GradCache(lambda image, text: clip_loss(image, text, logit_scale()))
history: dict[str, list[float]] = {"loss": [], "logit scale": [], "lr": []}
start = time.perf_counter()
for step in range(args.steps):
    batch = next(batches)
    images = to_model_input(batch["image"])
    texts = tokenize(batch["caption"]).to(device)
    optimizer.zero_grad(set_to_none=True)
    if args.micro_batch:
        # Unwrapped encoders (DDP would synchronise every micro-batch's backward), then
        # one average of the gradients over ranks; the scale's is averaged by the loss.
        loss = grad_cache.step(
            model.encode_image, model.encode_text, images, texts, micro_batch=args.micro_batch
        )
        if world > 1:
            for p in model.parameters():
                if p.grad is not None:
                    dist.all_reduce(p.grad)
                    p.grad /= world
    else:
        image_features, text_features, _ = train_model(images, texts)
        loss = clip_loss(image_features, text_features, logit_scale())
        loss.backward()
    optimizer.step()
    scheduler.step()
    logit_scale.clamp_()  # CLIP clips the temperature after the update

    history["loss"].append(loss.item())
    history["logit scale"].append(logit_scale().detach().item())
    history["lr"].append(scheduler.get_last_lr()[0])
    if rank == 0 and (step % 100 == 0 or step == args.steps - 1):
        print(
            f"step {step + 1}/{args.steps}: loss {history['loss'][-1]:.3f}, "
            f"scale {history['logit scale'][-1]:.1f}",
            flush=True,
        )
train_seconds = time.perf_counter() - start

# ------------------------------------------------------------------ evaluation and outputs
if rank == 0:
    metrics = evaluate_shapes(
        model,
        tokenize,
        preprocess=to_model_input,
        device=device,
        num_test=args.eval_size,
        num_compositional=args.eval_size,
    )
    total_seconds = time.perf_counter() - start
    tail = history["loss"][-20:]
    print(
        f"\ntrained {args.steps} steps x {args.batch_size * world} samples in {train_seconds:.0f} s; "
        f"total with evaluation {total_seconds:.0f} s; loss {history['loss'][0]:.3f} -> "
        f"{sum(tail) / len(tail):.3f}"
    )
    print(metrics_table({"clip": metrics}))
    if args.out:  # one safetensors file, keys "model.*" and "logit_scale.*"
        state = {f"model.{k}": v for k, v in model.state_dict().items()}
        state |= {f"logit_scale.{k}": v for k, v in logit_scale.state_dict().items()}
        save_file(
            {k: v.detach().cpu().contiguous().clone() for k, v in state.items()},
            args.out,
            metadata={"recipe": "train_clip", "steps": str(args.steps)},
        )
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        curves = {"loss": history["loss"], "logit scale": history["logit scale"]}
        fig, axes = plt.subplots(1, len(curves), figsize=(4 * len(curves), 3), squeeze=False)
        for ax, (name, values) in zip(axes[0], curves.items()):
            ax.plot(range(1, len(values) + 1), values)
            ax.set_xlabel("step")
            ax.set_title(name)
        fig.tight_layout()
        fig.savefig(args.plot, dpi=120)
        plt.close(fig)
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"metrics": metrics, "history": history, "train_seconds": train_seconds}, indent=1
            )
        )
if dist.is_available() and dist.is_initialized():
    dist.destroy_process_group()
