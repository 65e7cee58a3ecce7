"""Baseline recipe: CLIP (Radford et al., ICML 2021) trained from scratch on the shapes data.

A tiny open_clip ViT (``common.TINY_CLIP``, randomly initialised) learns from the
embedded procedural data with ``vlp.losses.clip_loss`` and a learnable
``vlp.heads.LogitScale``, then prints retrieval, zero-shot and compositional accuracy.

    python examples/train_clip.py                                  # CPU, a few minutes
    python examples/train_clip.py --plot clip.png --out clip.safetensors
    python -m vlp.data.shapes write --out shards/ --num 100000     # WebDataset shards
    python examples/train_clip.py --data shards/ --device cuda --steps 5000 --batch-size 256
    torchrun --nproc-per-node 4 examples/train_clip.py --data shards/ --device cuda

Under torchrun every rank trains on its own shards (or its own slice of the generated
data); ``clip_loss`` gathers the features of all ranks with gradient, so the loss is the
global-batch loss, and only rank 0 evaluates and saves.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import torch
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

sys.path.insert(0, str(Path(__file__).resolve().parent))  # `import common` from anywhere
import common

from vlp.distributed import get_rank, get_world_size
from vlp.heads import LogitScale
from vlp.losses import clip_loss

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
parser.add_argument("--plot", default=None, help="save training curves (png) here")
parser.add_argument("--json", default=None, help="write the metrics as JSON here")
args = parser.parse_args()

if args.threads:
    torch.set_num_threads(args.threads)
device = common.init_distributed(args.device)
rank, world = get_rank(), get_world_size()
torch.manual_seed(args.seed)  # same initial weights on every rank

# Model: open_clip's CLIP, unmodified. The temperature lives in vlp's LogitScale, so
# open_clip's own logit_scale parameter is frozen (and unused).
model = common.tiny_clip().to(device)
model.logit_scale.requires_grad_(False)
logit_scale = LogitScale(init=1 / 0.07, max_scale=100.0).to(device)
tokenize = common.tokenizer(model.context_length)
train_model = DistributedDataParallel(model) if world > 1 else model

# AdamW without weight decay on gains, biases, embeddings and the temperature (as CLIP).
decay, no_decay = [], [*logit_scale.parameters()]
for name, p in model.named_parameters():
    if p.requires_grad:
        wd = p.ndim >= 2 and "embedding" not in name and "positional" not in name
        (decay if wd else no_decay).append(p)
optimizer = torch.optim.AdamW(
    [
        {"params": decay, "weight_decay": args.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ],
    lr=args.lr,
    betas=(0.9, 0.98),
    eps=1e-6,
)


def lr_factor(step: int) -> float:  # linear warm-up, then cosine decay to zero
    if step < args.warmup:
        return (step + 1) / args.warmup
    return 0.5 * (1 + math.cos(math.pi * (step - args.warmup) / max(1, args.steps - args.warmup)))


scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lr_factor)
batches = common.train_batches(
    args.data, batch_size=args.batch_size, seed=args.seed, workers=args.workers
)

history: dict[str, list[float]] = {"loss": [], "logit scale": [], "lr": []}
start = time.perf_counter()
progress = tqdm(range(args.steps), disable=rank != 0, desc="train", mininterval=2.0)
for step in progress:
    batch = next(batches)
    images = common.to_model_input(batch["image"], device)
    texts = tokenize(batch["caption"]).to(device)
    image_features, text_features, _ = train_model(images, texts)
    loss = clip_loss(image_features, text_features, logit_scale())
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    scheduler.step()
    logit_scale.clamp_()  # CLIP clips the temperature after the update

    history["loss"].append(loss.item())
    history["logit scale"].append(logit_scale().detach().item())
    history["lr"].append(scheduler.get_last_lr()[0])
    if step % 20 == 0:
        progress.set_postfix(loss=f"{loss.item():.3f}", scale=f"{history['logit scale'][-1]:.1f}")
train_seconds = time.perf_counter() - start

if rank == 0:
    metrics = common.evaluate(
        model, tokenize, device=device, num_test=args.eval_size, num_compositional=args.eval_size
    )
    total_seconds = time.perf_counter() - start
    print(
        f"\ntrained {args.steps} steps x {args.batch_size * world} samples in {train_seconds:.0f} s; "
        f"total with evaluation {total_seconds:.0f} s; loss {history['loss'][0]:.3f} -> "
        f"{sum(history['loss'][-20:]) / len(history['loss'][-20:]):.3f}"
    )
    common.print_table({"clip": metrics})
    if args.out:
        common.save_checkpoint(
            {"model": model, "logit_scale": logit_scale},
            args.out,
            {"recipe": "train_clip", "steps": str(args.steps)},
        )
    if args.plot:
        common.plot_curves(
            {"loss": history["loss"], "logit scale": history["logit scale"]}, args.plot
        )
    if args.json:
        Path(args.json).write_text(
            json.dumps(
                {"metrics": metrics, "history": history, "train_seconds": train_seconds}, indent=1
            )
        )
common.cleanup_distributed()
