"""S-SMKE recipe: a vision-language student built from pretrained unimodal encoders and distilled.

S-SMKE (Cares, "Leveraging Pretrained Unimodal Models for Efficient Vision-Language
Pretraining") slices the first layers of a pretrained image encoder and a pretrained
text encoder, puts one shared Transformer block on top, and trains the student with
image-text contrastive losses plus contrastive distillation of a frozen image teacher
(with a memory bank of past teacher embeddings) into both modalities.

No pretrained weights can be downloaded here, so the recipe first makes its own
stand-ins on the embedded shapes data:

1. an image encoder (timm ViT, 4 blocks) trained to classify which shapes, colours
   and colour-shape pairs a scene contains (multi-label, from the ground-truth scene);
2. a text encoder (open_clip text transformer, 4 blocks) trained on the captions with
   the same labels.

Then it trains two students of the same architecture for the same number of steps:

- ``distill``: the first ``--layers`` blocks of both pretrained encoders, shared block,
  ``vlp.losses.ssmke_loss`` = contrastive distillation of the frozen image encoder
  (all 4 blocks, CLS of the last block, ``vlp.heads.FrozenTeacher``) against a
  ``vlp.losses.TeacherMemoryBank`` + the two ITC terms;
- ``scratch``: randomly initialised encoders, ITC only;
- ``init-only`` (``--runs distill,scratch,init-only``): pretrained encoders, ITC only,
  to separate the initialisation from the distillation.

    python examples/distill_unimodal.py --threads 1              # CPU, ~10 minutes
    python examples/distill_unimodal.py --runs distill,scratch,init-only --json out.json
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import open_clip
import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn
from torch.utils.data import DataLoader

from vlp.data.shapes import COLOURS, SHAPES, ShapesDataset, collate_shapes
from vlp.eval import evaluate_shapes, metrics_table
from vlp.heads import FrozenTeacher
from vlp.losses import LogitScale, TeacherMemoryBank, clip_loss, ssmke_loss
from vlp.models import SSMKE, build_ssmke
from vlp.optim import param_groups, warmup_cosine_scheduler

WIDTH, DEPTH, HEADS = 64, 4, 2
PAIRS = [(c, s) for c in COLOURS for s in SHAPES]
NUM_LABELS = len(SHAPES) + len(COLOURS) + len(PAIRS)  # 6 + 8 + 48 = 62


def scene_labels(scenes: Sequence[dict[str, Any]]) -> torch.Tensor:
    """``(B, 62)`` multi-hot: shapes present, colours present, colour-shape pairs present."""
    out = torch.zeros(len(scenes), NUM_LABELS)
    for i, scene in enumerate(scenes):
        for obj in scene["objects"]:
            out[i, SHAPES.index(obj["shape"])] = 1
            out[i, len(SHAPES) + COLOURS.index(obj["colour"])] = 1
            out[i, len(SHAPES) + len(COLOURS) + PAIRS.index((obj["colour"], obj["shape"]))] = 1
    return out


def image_encoder() -> VisionTransformer:
    """The image tower: a timm ViT on 64x64 images with 8x8 patches (64 patch tokens)."""
    return VisionTransformer(
        img_size=64, patch_size=8, embed_dim=WIDTH, depth=DEPTH, num_heads=HEADS,
        mlp_ratio=2.0, num_classes=NUM_LABELS, global_pool="token",
    )  # fmt: skip


def text_encoder() -> TextTransformer:
    """The text tower, BERT-like: an open_clip text transformer (BPE vocabulary, 32 tokens)
    run bidirectionally and pooled at the start token, as S-SMKE's BERT student is at [CLS]."""
    return TextTransformer(
        context_length=32, vocab_size=49408, width=WIDTH, heads=HEADS, layers=DEPTH,
        mlp_ratio=2.0, output_dim=NUM_LABELS, no_causal_mask=True, pool_type="first",
    )  # fmt: skip


def train_batches(batch_size: int, seed: int) -> Iterator[dict[str, Any]]:
    """Endless batches of generated training samples."""
    dataset = ShapesDataset(1_000_000, split="train", seed=seed)
    for epoch in itertools.count():  # a fresh permutation per epoch of a million samples
        order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(seed + epoch))
        yield from DataLoader(
            dataset, batch_size=batch_size, sampler=order.tolist(), collate_fn=collate_shapes,
            drop_last=True,
        )  # fmt: skip


def to_model_input(images: torch.Tensor, device: torch.device) -> torch.Tensor:
    """uint8 images to [0, 1], then mean 0.38 and std 0.2 (the grey background's scale)."""
    return (images.to(device).float().div_(255) - 0.38) / 0.2


def adamw(
    modules: Sequence[nn.Module], lr: float, weight_decay: float, steps: int
) -> tuple[torch.optim.AdamW, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW without decay on 1-D parameters and embeddings (as S-SMKE); 10% linear warm-up,
    then cosine decay to zero."""
    groups = param_groups(*modules, weight_decay=weight_decay, no_decay_names=("embedding",))
    optimizer = torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.98), eps=1e-6)
    scheduler = warmup_cosine_scheduler(
        optimizer, warmup_steps=max(1, steps // 10), total_steps=steps
    )
    return optimizer, scheduler


def train_unimodal(
    model: nn.Module,
    forward: Callable[[dict[str, Any]], torch.Tensor],
    *,
    steps: int,
    batch_size: int,
    lr: float,
    seed: int,
) -> list[float]:
    """Multi-label BCE on the scene labels; returns the loss per step."""
    optimizer, scheduler = adamw([model], lr, 0.05, steps)
    batches = train_batches(batch_size, seed)
    model.train()
    losses = []
    for _ in range(steps):
        batch = next(batches)
        loss = F.binary_cross_entropy_with_logits(forward(batch), scene_labels(batch["scene"]))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        losses.append(loss.item())
    return losses


@torch.no_grad()
def label_accuracy(
    model: nn.Module, forward: Callable[[dict[str, Any]], torch.Tensor], num: int, seed: int
) -> dict[str, float]:
    """Per-label accuracy and exact-set accuracy of a unimodal encoder on ``test`` scenes."""
    was = model.training
    model.eval()
    ds = ShapesDataset(num, split="test", seed=seed)
    batch = collate_shapes([ds[i] for i in range(num)])
    pred = forward(batch) > 0
    target = scene_labels(batch["scene"]).bool()
    model.train(was)
    return {
        "label accuracy": (pred == target).float().mean().item(),
        "exact match": (pred == target).all(dim=1).float().mean().item(),
    }


class Embedder(nn.Module):
    """``encode_image`` / ``encode_text`` returning the shared block's CLS (``x``), for evaluate."""

    def __init__(self, model: SSMKE) -> None:
        super().__init__()
        self.model = model

    def encode_image(self, images: torch.Tensor) -> torch.Tensor:
        return self.model.encode_image(images).x

    def encode_text(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.encode_text(ids).x


def pretrain_encoders(
    args: argparse.Namespace,
    tokenize: Callable[[Sequence[str]], torch.Tensor],
    device: torch.device,
) -> tuple[VisionTransformer, TextTransformer, dict[str, Any]]:
    """Train the two stand-in 'pretrained' unimodal encoders."""
    torch.manual_seed(args.seed)
    vit, text = image_encoder().to(device), text_encoder().to(device)

    def vit_logits(batch: dict[str, Any]) -> torch.Tensor:
        out: torch.Tensor = vit(to_model_input(batch["image"], device))
        return out

    def text_logits(batch: dict[str, Any]) -> torch.Tensor:
        out: torch.Tensor = text(tokenize(batch["caption"]).to(device))
        return out

    start = time.perf_counter()
    image_loss = train_unimodal(
        vit, vit_logits, steps=args.teacher_steps, batch_size=args.batch_size,
        lr=args.teacher_lr, seed=args.seed + 1,
    )  # fmt: skip
    text_loss = train_unimodal(
        text, text_logits, steps=args.teacher_steps, batch_size=args.batch_size,
        lr=args.teacher_lr, seed=args.seed + 2,
    )  # fmt: skip
    report = {
        "seconds": time.perf_counter() - start,
        "image loss": image_loss,
        "text loss": text_loss,
        "image": label_accuracy(vit, vit_logits, args.eval_size, 777),
        "text": label_accuracy(text, text_logits, args.eval_size, 777),
    }
    return vit.eval(), text.eval(), report


def make_student(
    vit: VisionTransformer, text: TextTransformer, layers: int, *, pretrained: bool, seed: int
) -> SSMKE:
    """The S-SMKE student: copies of the first ``layers`` blocks, or fresh encoders."""
    torch.manual_seed(seed)
    if pretrained:
        image, words = copy.deepcopy(vit), copy.deepcopy(text)
    else:
        image, words = image_encoder(), text_encoder()
    image.requires_grad_(True)
    words.requires_grad_(True)
    device = next(vit.parameters()).device
    return build_ssmke(image, words, layers, heads=HEADS, mlp_ratio=2.0, kd_dim=WIDTH).to(device)


def make_teacher(vit: VisionTransformer) -> FrozenTeacher:
    """The frozen image teacher: all blocks, final norm removed, CLS of the last block."""
    teacher = copy.deepcopy(vit)
    teacher.norm = nn.Identity()
    return FrozenTeacher(teacher, lambda m, x: m.forward_features(x)[:, 0])


def train_student(
    model: SSMKE,
    teacher: FrozenTeacher | None,
    args: argparse.Namespace,
    tokenize: Callable[[Sequence[str]], torch.Tensor],
    device: torch.device,
) -> tuple[dict[str, list[float]], TeacherMemoryBank | None]:
    """Train with ``ssmke_loss`` (teacher given) or ITC only; returns the curves and the bank."""
    scales = nn.ModuleList([LogitScale(), LogitScale()]).to(device)  # ITC #1 and #2
    bank = None
    if teacher is not None:
        bank = TeacherMemoryBank(
            args.bank_size, WIDTH, init=args.bank_init,
            generator=torch.Generator().manual_seed(args.seed), device=device,
        )  # fmt: skip
    optimizer, scheduler = adamw([model, scales], args.lr, args.weight_decay, args.steps)
    batches = train_batches(args.batch_size, args.seed)
    history: dict[str, list[float]] = {"loss": [], "kd": [], "itc": []}
    model.train()
    for _ in range(args.steps):
        batch = next(batches)
        images = to_model_input(batch["image"], device)
        ids = tokenize(batch["caption"]).to(device)
        image_out, text_out = model.encode_image(images), model.encode_text(ids)
        targets = None if teacher is None else teacher(images)
        if targets is not None:
            out = ssmke_loss(
                image_out, text_out, targets, bank, 1 / 0.07, scales[0](), scales[1](),
                return_details=True,
            )  # fmt: skip
            loss, kd = out.loss, out.kd.item()
            itc = ((out.itc_intermediate + out.itc_output) / 2).item()
        else:
            itc_t = (
                clip_loss(image_out.x_interm, text_out.x_interm, scales[0]())
                + clip_loss(image_out.x, text_out.x, scales[1]())
            ) / 2
            loss, kd, itc = itc_t, float("nan"), itc_t.item()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        for s in scales:
            s.clamp_()  # type: ignore[operator]
        if bank is not None and targets is not None:
            bank.enqueue(targets)  # after the loss, as the reference
        history["loss"].append(loss.item())
        history["kd"].append(kd)
        history["itc"].append(itc)
    return history, bank


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the recipe; returns (and optionally writes) the metrics."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--teacher-steps", type=int, default=300, help="unimodal pre-training steps"
    )
    parser.add_argument("--steps", type=int, default=600, help="student steps (each run)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=1e-3, help="student learning rate")
    parser.add_argument("--teacher-lr", type=float, default=2e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--layers", type=int, default=2, help="blocks kept from each encoder")
    parser.add_argument("--bank-size", type=int, default=1024)
    parser.add_argument("--bank-init", default="empty", choices=["empty", "random_unit"])
    parser.add_argument("--runs", default="distill,scratch", help="comma-separated runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    parser.add_argument("--eval-size", type=int, default=1000, help="images per evaluation split")
    parser.add_argument("--json", default=None, help="write the metrics as JSON here")
    args = parser.parse_args(argv)
    runs = [r.strip() for r in args.runs.split(",") if r.strip()]
    unknown = set(runs) - {"distill", "scratch", "init-only"}
    if unknown:
        parser.error(f"--runs must name distill, scratch or init-only, got {sorted(unknown)}")
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    tokenize = open_clip.tokenizer.SimpleTokenizer(context_length=32)

    vit, text, pretraining = pretrain_encoders(args, tokenize, device)
    print(
        f"unimodal pre-training ({args.teacher_steps} steps each, {pretraining['seconds']:.0f} s): "
        f"image label acc {100 * pretraining['image']['label accuracy']:.1f}% "
        f"(exact {100 * pretraining['image']['exact match']:.1f}%), "
        f"text label acc {100 * pretraining['text']['label accuracy']:.1f}% "
        f"(exact {100 * pretraining['text']['exact match']:.1f}%)"
    )
    metrics: dict[str, dict[str, float]] = {}
    histories: dict[str, dict[str, list[float]]] = {}
    seconds: dict[str, float] = {}
    for run in runs:
        start = time.perf_counter()
        model = make_student(vit, text, args.layers, pretrained=run != "scratch", seed=args.seed)
        teacher = make_teacher(vit) if run == "distill" else None
        histories[run], _ = train_student(model, teacher, args, tokenize, device)
        seconds[run] = time.perf_counter() - start
        metrics[run] = evaluate_shapes(
            Embedder(model), tokenize, preprocess=lambda x: to_model_input(x, device),
            device=device, num_test=args.eval_size, num_compositional=args.eval_size,
        )  # fmt: skip
        loss = histories[run]["loss"]
        print(
            f"{run}: {args.steps} steps in {seconds[run]:.0f} s; loss {loss[0]:.3f} -> "
            f"{sum(loss[-20:]) / len(loss[-20:]):.3f}"
        )
    print(metrics_table(metrics))
    result = {
        "metrics": metrics,
        "history": histories,
        "pretraining": pretraining,
        "seconds": seconds,
        "args": vars(args),
    }
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
