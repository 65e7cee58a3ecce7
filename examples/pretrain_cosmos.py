"""COSMOS recipe (Kim et al., CVPR 2025) against CLIP at the same number of steps.

Trains the tiny open_clip model of ``examples/train_clip.py`` from scratch on the embedded
shapes data twice and prints the evaluation table side by side:

- ``clip``: the baseline, ``examples/train_clip.py`` itself, run with this recipe's steps,
  batch size, schedule and seed (one 64 px image and its short caption per sample,
  ``vlp.losses.clip_loss``).
- ``cosmos``: COSMOS pre-training. Per sample, ``vlp.augment.MultiCropTransform`` makes 2
  global 64 px crops and ``--num-local`` smaller local crops (encoded by the unmodified
  tower through ``vlp.adapters.open_clip_multi_crop_tokens``, local crops with the
  reference's positional-embedding interpolation); ``vlp.augment.text_crop`` samples 2
  global captions (1-5 sentences) and ``--num-text-local`` single sentences from the long
  description and short captions. A ``vlp.heads.COSMOSHead`` (token mappings and two
  ``CrossAttentionPooler``) builds cross-modal features, a ``vlp.heads.EMATeacher`` of the
  model gives the distillation targets, and ``vlp.losses.COSMOSLoss`` adds the CLIP term
  (global crops x all captions) to the self-distillation term. The EMA update runs before
  ``optimizer.step()``, as in the reference. The table reports the student's plain
  embeddings (the cross-attention is used only for the loss), and the teacher's.

A second table scores zero-shot semantic segmentation of held-out scenes by shape and by
colour (mIoU over object pixels, ``vlp.eval.evaluate_shapes_segmentation``): COSMOS's third
task family, SCLIP's protocol (correlative self-attention in the last block through
``vlp.adapters.open_clip_dense_features``, sliding windows), beside the chance level of
uniform random labels. ``--seg-size 0`` skips it.

    python examples/pretrain_cosmos.py --threads 1                 # both runs, CPU
    python examples/pretrain_cosmos.py --methods cosmos --steps 1000 --json cosmos.json

Augmentation: the crop scales and jitter strengths default to values that suit this data
rather than COSMOS's photo defaults (``MultiCropTransform()``): the captions name colours
and left/right positions, so hue jitter, grayscale and horizontal flips would make them
false (see ``--help`` for the knobs).
"""

from __future__ import annotations

import argparse
import functools
import itertools
import json
import random
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import open_clip
import torch
import torchvision.transforms.v2.functional as TF
from open_clip.model import CLIPTextCfg, CLIPVisionCfg
from safetensors.torch import load_file
from torch import nn
from torch.utils.data import DataLoader

from vlp.adapters import (
    open_clip_dense_features,
    open_clip_multi_crop_tokens,
    open_clip_text_tokens,
)
from vlp.augment import MultiCropTransform, split_sentences, text_crop
from vlp.data.shapes import ShapesDataset, collate_shapes
from vlp.eval import evaluate_shapes, evaluate_shapes_segmentation, metrics_table
from vlp.heads import COSMOSHead, EMATeacher
from vlp.losses import COSMOSLoss
from vlp.optim import param_groups, warmup_cosine_scheduler

parser = argparse.ArgumentParser(
    description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
)
parser.add_argument("--methods", default="clip,cosmos", help="comma-separated: clip, cosmos")
parser.add_argument("--steps", type=int, default=300, help="optimiser steps of each run")
parser.add_argument("--batch-size", type=int, default=32)
parser.add_argument("--lr", type=float, default=2e-3)
parser.add_argument("--weight-decay", type=float, default=0.1)
parser.add_argument("--warmup", type=int, default=50, help="linear warm-up steps")
parser.add_argument("--momentum", type=float, default=0.99, help="EMA teacher momentum (fixed)")
parser.add_argument("--local-size", type=int, default=32, help="local crop side (px)")
parser.add_argument("--num-local", type=int, default=4, help="local image crops")
parser.add_argument("--num-text-local", type=int, default=4, help="local (1-sentence) captions")
parser.add_argument("--global-scale", type=float, nargs=2, default=(0.6, 1.0))
parser.add_argument("--local-scale", type=float, nargs=2, default=(0.15, 0.6))
parser.add_argument("--jitter", type=float, default=0.2, help="brightness/contrast jitter")
parser.add_argument("--seed", type=int, default=0)
parser.add_argument("--device", default="cpu")
parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
parser.add_argument("--eval-size", type=int, default=1000, help="images per evaluation split")
parser.add_argument(
    "--seg-size", type=int, default=200, help="images for the segmentation table (0: skip)"
)
parser.add_argument("--json", default=None, help="write metrics and histories as JSON here")
args = parser.parse_args()

if args.threads:
    torch.set_num_threads(args.threads)
device = torch.device(args.device)
methods = [m.strip() for m in args.methods.split(",") if m.strip()]
if not methods or set(methods) - {"clip", "cosmos"}:
    parser.error(f"--methods must list clip and/or cosmos, got {args.methods!r}")


# The shapes images have a grey background (mean about 0.38 per channel); the baseline
# recipe normalises them with mean 0.38 and std 0.2, and so does this one.
MEAN, STD = (0.38, 0.38, 0.38), (0.2, 0.2, 0.2)


def to_model_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 images to the model's input: [0, 1], then the mean and std above."""
    return (images.to(device).float().div_(255) - MEAN[0]) / STD[0]


tokenize = open_clip.tokenizer.SimpleTokenizer(context_length=32)  # open_clip's BPE


def tiny_clip() -> open_clip.CLIP:
    """The baseline recipe's tiny open_clip CLIP: a ViT on 64x64 images with 8x8 patches,
    2 layers, width 64; a 2-layer text transformer with a 32-token context."""
    return open_clip.CLIP(
        embed_dim=64,
        vision_cfg=CLIPVisionCfg(
            image_size=64, patch_size=8, width=64, layers=2, head_width=32, mlp_ratio=2.0
        ),
        text_cfg=CLIPTextCfg(
            context_length=32, vocab_size=49408, width=64, heads=2, layers=2, mlp_ratio=2.0
        ),
    ).to(device)


def train_clip() -> tuple[dict[str, float], dict[str, list[float]], float, nn.Module]:
    """The baseline: run examples/train_clip.py with this recipe's settings; read its JSON
    and its checkpoint."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "clip.json"
        weights = Path(tmp) / "clip.safetensors"
        command = [sys.executable, str(Path(__file__).resolve().parent / "train_clip.py")]
        for flag, value in (
            ("--steps", args.steps), ("--batch-size", args.batch_size), ("--lr", args.lr),
            ("--weight-decay", args.weight_decay), ("--warmup", args.warmup),
            ("--seed", args.seed), ("--device", args.device), ("--eval-size", args.eval_size),
            ("--threads", args.threads), ("--json", out), ("--out", weights),
        ):  # fmt: skip
            if value is not None:
                command += [flag, str(value)]
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
        report = json.loads(out.read_text())
        state = load_file(str(weights))
    model = tiny_clip()
    model.load_state_dict({k[6:]: v for k, v in state.items() if k.startswith("model.")})
    history = {"loss": report["history"]["loss"]}
    return report["metrics"], history, report["train_seconds"], model


def train_batches() -> Iterator[dict[str, Any]]:
    """Endless batches of generated samples, 3 short captions each."""
    dataset = ShapesDataset(1_000_000, split="train", seed=args.seed, num_captions=3)
    for epoch in itertools.count():  # a fresh permutation per epoch of a million samples
        order = torch.randperm(
            len(dataset), generator=torch.Generator().manual_seed(args.seed + epoch)
        )
        yield from DataLoader(
            dataset, batch_size=args.batch_size, sampler=order.tolist(),
            collate_fn=collate_shapes, drop_last=True,
        )  # fmt: skip


def cosmos_views(
    batch: dict[str, Any],
    transform: MultiCropTransform,
    generator: torch.Generator,
    rng: random.Random,
) -> tuple[list[torch.Tensor], list[str]]:
    """Image views ``[g1, g2, l1..]`` (each (B, 3, s, s)) and captions in view-major order."""
    # PIL images, as the reference (PIL's C ops are also the fastest on a CPU).
    pil = [TF.to_pil_image(image) for image in batch["image"]]
    crops = [transform(image, generator=generator) for image in pil]
    views = [torch.stack([c[v] for c in crops]).to(device) for v in range(len(crops[0]))]
    per_sample = [
        text_crop(
            [*captions, *split_sentences(description)],
            num_global=2,
            num_local=args.num_text_local,
            rng=rng,
        )
        for captions, description in zip(batch["captions"], batch["description"])
    ]
    view_major = [crops_[c] for c in range(len(per_sample[0])) for crops_ in per_sample]
    return views, view_major


def train_cosmos() -> tuple[nn.Module, nn.Module, dict[str, list[float]]]:
    torch.manual_seed(args.seed)
    model = tiny_clip()
    model.logit_scale.requires_grad_(False)  # the two temperatures live in COSMOSLoss
    embed_dim = model.text_projection.shape[1]
    head = COSMOSHead(
        embed_dim,
        image_token_dim=model.visual.proj.shape[0],
        text_token_dim=model.text_projection.shape[0],
        num_heads=2,
    ).to(device)
    loss_fn = COSMOSLoss().to(device)
    teacher = EMATeacher(model, momentum=args.momentum)  # copied before any update
    # AdamW without weight decay on gains, biases, embeddings and temperatures (as the
    # baseline); linear warm-up, then cosine decay to zero.
    optimizer = torch.optim.AdamW(
        param_groups(model, head, loss_fn, weight_decay=args.weight_decay),
        lr=args.lr,
        betas=(0.9, 0.98),
        eps=1e-6,
    )
    scheduler = warmup_cosine_scheduler(optimizer, warmup_steps=args.warmup, total_steps=args.steps)
    size = model.visual.image_size[0]
    transform = MultiCropTransform(
        global_size=size, local_size=args.local_size, num_local=args.num_local,
        global_scale=args.global_scale, local_scale=args.local_scale, flip_p=0.0,
        brightness=args.jitter, contrast=args.jitter, saturation=args.jitter, hue=0.0,
        grayscale_p=0.0, blur_radius=(0.1, 1.0), mean=MEAN, std=STD,
    )  # fmt: skip
    generator = torch.Generator().manual_seed(args.seed)
    rng = random.Random(args.seed)
    batches = train_batches()
    history: dict[str, list[float]] = {"loss": [], "clip": [], "distillation": []}
    for step in range(args.steps):
        batch = next(batches)
        views, captions = cosmos_views(batch, transform, generator, rng)
        b = views[0].shape[0]
        texts = tokenize(captions).to(device)  # (V_t * B, L), view-major
        # Student: pooled embeddings of every view, tokens of g1 and G1 (unprojected).
        dense = open_clip_multi_crop_tokens(model, views, project=False)
        image = [d.pooled @ model.visual.proj for d in dense]
        text_dense = open_clip_text_tokens(model, texts, project=False)
        text = list((text_dense.pooled @ model.text_projection).split(b))
        image_x, text_x = head(
            torch.stack(image, dim=1), torch.stack(text, dim=1),
            dense[0].tokens, text_dense.tokens[:b],
        )  # fmt: skip
        # Teacher: plain embeddings of the two global crops and the two global captions.
        teacher_image = teacher.module.encode_image(torch.cat(views[:2])).detach().split(b)
        teacher_text = teacher.module.encode_text(texts[: 2 * b]).detach().split(b)
        out = loss_fn(
            image, text, list(image_x.unbind(1)), list(text_x.unbind(1)),
            list(teacher_image), list(teacher_text), return_details=True,
        )  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        out.loss.backward()
        teacher.update(model)  # before the optimizer step, as the reference
        optimizer.step()
        scheduler.step()
        loss_fn.clamp_()
        history["loss"].append(out.loss.item())
        history["clip"].append(out.clip.item())
        history["distillation"].append(out.distillation.item())
        if step % 50 == 0:
            print(
                f"cosmos step {step}: loss {out.loss.item():.3f} (clip {out.clip.item():.3f}, "
                f"distillation {out.distillation.item():.3f})",
                flush=True,
            )
    return model, teacher.module, history


def evaluate(model: nn.Module) -> dict[str, float]:
    return evaluate_shapes(
        model, tokenize, preprocess=to_model_input, device=device,
        num_test=args.eval_size, num_compositional=args.eval_size,
    )  # fmt: skip


def segment(model: nn.Module) -> dict[str, float]:
    """Zero-shot segmentation by shape and colour, SCLIP's CSA in the last block."""
    return evaluate_shapes_segmentation(
        functools.partial(open_clip_dense_features, model), model, tokenize,
        preprocess=to_model_input, device=device, num_images=args.seg_size,
    )  # fmt: skip


results: dict[str, dict[str, float]] = {}
segmentation: dict[str, dict[str, float]] = {}
report: dict[str, Any] = {"args": vars(args), "seconds": {}, "history": {}}
for method in methods:
    start = time.perf_counter()
    if method == "clip":
        results["clip"], history, report["seconds"]["clip"], clip_model = train_clip()
        if args.seg_size:
            segmentation["clip"] = segment(clip_model)
    else:
        model, teacher_model, history = train_cosmos()
        report["seconds"]["cosmos"] = time.perf_counter() - start
        results["cosmos"] = evaluate(model)
        results["cosmos teacher"] = evaluate(teacher_model)
        if args.seg_size:
            segmentation["cosmos"] = segment(model)
            segmentation["cosmos teacher"] = segment(teacher_model)
    report["history"][method] = history
    loss = history["loss"]
    print(
        f"{method}: {args.steps} steps x {args.batch_size} in {report['seconds'][method]:.0f} s; "
        f"loss {loss[0]:.3f} -> {sum(loss[-20:]) / len(loss[-20:]):.3f}",
        flush=True,
    )

print(metrics_table(results))
if segmentation:
    # mIoU per run, and the chance level of uniform random labels (the same for every run).
    seg_runs = {
        run: {k: v for k, v in m.items() if k.startswith("seg mIoU")}
        for run, m in segmentation.items()
    }
    first = next(iter(segmentation.values()))
    seg_runs["chance"] = {k.replace("chance", "mIoU"): v for k, v in first.items() if "chance" in k}
    print()
    print(metrics_table(seg_runs))
if args.json:
    report["metrics"] = results
    report["segmentation"] = seg_runs if segmentation else {}
    Path(args.json).write_text(json.dumps(report, indent=1))
if "clip" in results and "cosmos" in results:
    recalls = [m for m in results["clip"] if "R@" in m]

    def mean(run: str, keys: list[str]) -> float:
        return 100 * sum(results[run][k] for k in keys) / len(keys)

    print(
        f"\nCOSMOS - CLIP at {args.steps} steps: mean recall "
        f"{mean('cosmos', recalls) - mean('clip', recalls):+.1f} points, comp mean "
        f"{100 * (results['cosmos']['comp mean'] - results['clip']['comp mean']):+.1f} points"
    )
