"""FSC-CLIP recipe (Oh et al., EMNLP 2024): fine-tune the CLIP baseline with hard negatives.

Starting from the checkpoint of ``examples/train_clip.py`` (trained first when missing), it
fine-tunes the tiny open_clip model for the same number of steps three ways and prints the
baseline recipe's table side by side, as the mean (and spread) over seeds:

- ``clip``: plain CLIP fine-tuning (``vlp.losses.clip_loss`` on the captions);
- ``negclip``: NegCLIP (``vlp.losses.negclip_loss``: the hard-negative captions join the
  image-to-text softmax of the whole batch);
- ``fsc-clip``: ``vlp.losses.FSCCLIPLoss``, i.e. CLIP + 0.5 x global hard-negative loss +
  0.2 x local (token-level) hard-negative loss, both with selective calibrated
  regularisation; patch and word tokens come from ``vlp.adapters.open_clip_image_tokens`` /
  ``open_clip_text_tokens``.

Hard negatives are made on the fly from each batch's captions by
``vlp.negatives.hard_negatives`` (swap, replace, bigram shuffle; offline, rule based), the
same negatives for NegCLIP and FSC-CLIP. ``--lora`` fine-tunes rank-4 LoRA updates
(``vlp.adapters.apply_lora``) instead of all weights, for every method.

    python examples/finetune_fsc_clip.py --threads 1                   # small: a few CPU minutes
    python examples/finetune_fsc_clip.py --steps 300 --seeds 3          # the documented table
    python examples/finetune_fsc_clip.py --base clip.safetensors --lora
    python examples/finetune_fsc_clip.py --data shards/ --device cuda --steps 2000 --batch-size 256

The evaluation data (held-out colour-shape pairs, fixed seed) is the baseline recipe's and is
never looked at during training.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import statistics
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import open_clip
import torch
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from safetensors.torch import load_file
from torch.utils.data import DataLoader

from vlp.adapters import apply_lora, open_clip_image_tokens, open_clip_text_tokens
from vlp.data import shapes_from_shards
from vlp.data.shapes import NEGATIVE_TYPES, ShapesDataset, collate_shapes
from vlp.eval import evaluate_shapes, metrics_table
from vlp.losses import FSCCLIPLoss, LogitScale, clip_loss, negclip_loss
from vlp.negatives import hard_negatives
from vlp.optim import param_groups, warmup_cosine_scheduler

METHODS = ("clip", "negclip", "fsc-clip")

parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
)
parser.add_argument("--base", default="clip-base.safetensors", help="baseline checkpoint")
parser.add_argument("--base-steps", type=int, default=1000, help="steps if the base is trained")
parser.add_argument("--methods", default=",".join(METHODS), help="comma-separated subset")
parser.add_argument("--steps", type=int, default=100, help="fine-tuning steps per method")
parser.add_argument("--seeds", type=int, default=1, help="fine-tuning seeds 0..n-1")
parser.add_argument("--batch-size", type=int, default=64)
parser.add_argument("--lr", type=float, default=None, help="default 1e-3, 1e-2 with --lora")
parser.add_argument("--weight-decay", type=float, default=0.1)
parser.add_argument("--warmup", type=int, default=None, help="default 10%% of the steps")
parser.add_argument("--lora", action="store_true", help="fine-tune rank-4 LoRA updates only")
parser.add_argument("--lambda-global", type=float, default=0.5)
parser.add_argument("--lambda-local", type=float, default=0.2)
parser.add_argument(
    "--negatives",
    choices=("rules", "data"),
    default="rules",
    help="rules: vlp.negatives.hard_negatives; data: the data set's own verified negatives "
    "of the training captions (the evaluation's edit types, an upper bound)",
)
parser.add_argument("--kinds", default="swap,replace,shuffle", help="vlp.negatives kinds")
parser.add_argument("--data", default=None, help="WebDataset shards; default: generate")
parser.add_argument("--device", default="cpu")
parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
parser.add_argument("--eval-size", type=int, default=1000, help="images per evaluation split")
parser.add_argument("--json", default=None, help="write all metrics as JSON here")
args = parser.parse_args()

if args.threads:
    torch.set_num_threads(args.threads)
device = torch.device(args.device)
methods = [m for m in args.methods.split(",") if m]
for m in methods:
    if m not in METHODS:
        parser.error(f"--methods: unknown method {m!r}; choose from {METHODS}")
lr = args.lr if args.lr is not None else (1e-2 if args.lora else 1e-3)
warmup = args.warmup if args.warmup is not None else max(1, args.steps // 10)
kinds = tuple(k for k in args.kinds.split(",") if k)

# ------------------------------------------------------------------------- the baseline
if not Path(args.base).exists():
    print(f"{args.base} not found: training the CLIP baseline ({args.base_steps} steps) first")
    command = [sys.executable, str(Path(__file__).resolve().parent / "train_clip.py")]
    command += ["--steps", str(args.base_steps), "--out", args.base, "--device", args.device]
    command += ["--eval-size", str(args.eval_size)]
    if args.threads:
        command += ["--threads", str(args.threads)]
    subprocess.run(command, check=True)


def load_base() -> tuple[torch.nn.Module, LogitScale]:
    """The baseline recipe's model (same configuration) and temperature, from its checkpoint."""
    model = open_clip.CLIP(
        embed_dim=64,
        vision_cfg=CLIPVisionCfg(
            image_size=64, patch_size=8, width=64, layers=2, head_width=32, mlp_ratio=2.0
        ),
        text_cfg=CLIPTextCfg(
            context_length=32, vocab_size=49408, width=64, heads=2, layers=2, mlp_ratio=2.0
        ),
    )
    scale = LogitScale()
    state = load_file(args.base)  # keys "model.*" and "logit_scale.*"
    for prefix, module in (("model.", model), ("logit_scale.", scale)):
        module.load_state_dict(
            {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        )
    model.logit_scale.requires_grad_(False)  # the temperature lives in LogitScale
    return model.to(device), scale.to(device)


tokenize = open_clip.tokenizer.SimpleTokenizer(context_length=32)


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to the baseline's input: [0, 1], then mean 0.38 and std 0.2."""
    return (images.to(device).float().div_(255) - 0.38) / 0.2


def evaluate(model: torch.nn.Module) -> dict[str, float]:
    return evaluate_shapes(
        model, tokenize, preprocess=to_model_input, device=device,
        num_test=args.eval_size, num_compositional=args.eval_size,
    )  # fmt: skip


def train_batches(seed: int) -> Iterator[dict[str, Any]]:
    """Endless training batches: WebDataset shards (``--data``) or generated samples."""
    if args.data:
        for epoch in itertools.count():
            pipeline = shapes_from_shards(args.data, shuffle=2000, seed=seed, epoch=epoch)
            yield from DataLoader(pipeline, batch_size=args.batch_size, collate_fn=collate_shapes)
    dataset = ShapesDataset(1_000_000, split="train", seed=seed)
    for epoch in itertools.count():  # a fresh permutation per epoch of a million samples
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed + epoch))
        yield from DataLoader(
            dataset, batch_size=args.batch_size, sampler=order.tolist(),
            collate_fn=collate_shapes, drop_last=True,
        )  # fmt: skip


# ---------------------------------------------------------------------- hard negatives
def negatives_of(batch: dict[str, Any], rng: random.Random) -> tuple[list[list[str]], torch.Tensor]:
    """``B x N`` negative captions ("" where missing) and their ``(B, N)`` mask."""
    if args.negatives == "data":
        grid = [[n.get(t, "") for t in NEGATIVE_TYPES] for n in batch["negatives"]]
        return grid, torch.tensor([[bool(s) for s in row] for row in grid])
    grid, mask = hard_negatives(batch["caption"], kinds=kinds, rng=rng)
    return grid, mask


def encode_batch(
    model: torch.nn.Module,
    images: torch.Tensor,
    captions: list[str],
    grid: list[list[str]] | None,
    mask: torch.Tensor | None,
    dense: bool,
) -> dict[str, torch.Tensor]:
    """One forward of each tower: captions and the existing negatives in one text batch.

    Negatives come back as zero-filled ``(B, N, ...)`` grids in ``mask``'s layout.
    """
    existing = [] if mask is None else mask.nonzero().tolist()
    texts = captions + [grid[b][j] for b, j in existing] if grid is not None else captions
    ids = tokenize(texts).to(device)
    if dense:
        image = open_clip_image_tokens(model, images)
        text = open_clip_text_tokens(model, ids)
        out = {"image": image.pooled, "image_tokens": image.tokens}
        pooled, tokens, token_mask = text
    else:
        out = {"image": model.encode_image(images)}
        pooled, tokens, token_mask = model.encode_text(ids), None, None
    batch = len(captions)
    out["text"] = pooled[:batch]
    if mask is None:
        return out
    mask = mask.to(device)
    rows, cols = mask.nonzero(as_tuple=True)

    def grid_of(x: torch.Tensor) -> torch.Tensor:
        filled = x.new_zeros((batch, mask.shape[1], *x.shape[1:]))
        return filled.index_put((rows, cols), x[batch:])

    out["negatives"] = grid_of(pooled)
    out["negative_mask"] = mask
    if tokens is not None and token_mask is not None:
        out["text_tokens"], out["text_mask"] = tokens[:batch], token_mask[:batch]
        out["negative_tokens"], out["negative_token_mask"] = grid_of(tokens), grid_of(token_mask)
    return out


# --------------------------------------------------------------------------- fine-tuning
def finetune(method: str, seed: int) -> tuple[dict[str, float], list[float]]:
    torch.manual_seed(seed)
    rng = random.Random(seed)
    model, scale = load_base()
    if args.lora:
        apply_lora(model)  # rank 4, scaling 0.25, the release's targets; the rest frozen
        scale.requires_grad_(False)  # the release freezes the logit scale too
    loss_fn = None
    if method == "fsc-clip":
        loss_fn = FSCCLIPLoss.from_model(
            scale,  # the base model's LogitScale
            lambda_global=args.lambda_global,
            lambda_local=args.lambda_local,
            learnable_scale=not args.lora,
        ).to(device)
        loss_fn.logit_scale.load_state_dict(scale.state_dict())
        scale = loss_fn.logit_scale
    # AdamW with weight decay on every trained matrix (LoRA's A and B with --lora), none on
    # vectors and the temperature; linear warm-up, then cosine to zero (as the release).
    optimizer = torch.optim.AdamW(
        param_groups(model, scale, weight_decay=args.weight_decay, no_decay_names=()),
        lr=lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=warmup, total_steps=args.steps)
    batches = train_batches(1000 + seed)
    losses = []
    model.train()
    for _ in range(args.steps):
        batch = next(batches)
        images = to_model_input(batch["image"])
        captions = list(batch["caption"])
        grid, mask = (None, None) if method == "clip" else negatives_of(batch, rng)
        out = encode_batch(model, images, captions, grid, mask, dense=method == "fsc-clip")
        if method == "clip":
            loss = clip_loss(out["image"], out["text"], scale())
        elif method == "negclip":
            loss = negclip_loss(
                out["image"], out["text"], out["negatives"], out["negative_mask"], scale()
            )
        else:
            assert loss_fn is not None
            loss = loss_fn(
                out["image"], out["text"], out["negatives"], out["negative_mask"],
                image_tokens=out["image_tokens"], text_tokens=out["text_tokens"],
                text_mask=out["text_mask"], negative_tokens=out["negative_tokens"],
                negative_token_mask=out["negative_token_mask"],
            )  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        scale.clamp_()
        losses.append(loss.item())
    return evaluate(model), losses


start = time.perf_counter()
base_model, _ = load_base()
runs: dict[str, list[dict[str, float]]] = {"base": [evaluate(base_model)]}
history: dict[str, list[list[float]]] = {}
for method in methods:
    name = f"{method}-lora" if args.lora else method
    runs[name], history[name] = [], []
    for seed in range(args.seeds):
        t0 = time.perf_counter()
        metrics, losses = finetune(method, seed)
        runs[name].append(metrics)
        history[name].append(losses)
        print(
            f"{name} seed {seed}: {args.steps} steps in {time.perf_counter() - t0:.0f} s, "
            f"loss {losses[0]:.3f} -> {sum(losses[-10:]) / len(losses[-10:]):.3f}, "
            f"comp mean {100 * metrics['comp mean']:.1f}",
            flush=True,
        )


def summary(values: list[dict[str, float]], reduce: Any) -> dict[str, float]:
    return {k: reduce([v[k] for v in values]) for k in values[0]}


means = {name: summary(v, statistics.fmean) for name, v in runs.items()}
print(
    f"\nfine-tuned {args.steps} steps x {args.batch_size} samples, {args.seeds} seed(s), "
    f"lr {lr:g}{', LoRA' if args.lora else ''}, negatives: {args.negatives}; "
    f"{time.perf_counter() - start:.0f} s in total\nmean over seeds:"
)
print(metrics_table(means))
if args.seeds > 1:
    spreads = {n: summary(v, statistics.stdev) for n, v in runs.items() if len(v) > 1}
    print("\nstandard deviation over seeds:")
    print(metrics_table(spreads))
if args.json:
    Path(args.json).write_text(
        json.dumps({"args": vars(args), "runs": runs, "mean": means, "history": history}, indent=1)
    )
