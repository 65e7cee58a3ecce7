"""Largest relative error of vlp's CLIP and SigLIP losses against open_clip, in float64.

Draws random shapes, scales and biases, compares values and gradients (w.r.t. raw
features, scale and bias; open_clip gets the L2-normalised features) and writes the
worst normwise relative error, max|ours - ref| / max|ref|, per quantity as JSON.

    python benchmarks/contrastive_parity.py --trials 200 --out parity.json
"""

import argparse
import json

import torch
import torch.nn.functional as F
from open_clip.loss import ClipLoss, SigLipLoss

import vlp

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--trials", type=int, default=200)
parser.add_argument("--max-n", type=int, default=300)
parser.add_argument("--max-d", type=int, default=130)
parser.add_argument("--seed", type=int, default=123)
parser.add_argument("--out", default=None, help="JSON file to write (default: print only)")
args = parser.parse_args()
torch.set_num_threads(1)

g = torch.Generator().manual_seed(args.seed)
worst: dict[str, float] = {}
skipped = 0


def uniform(lo: float, hi: float) -> float:
    return float(torch.empty(()).uniform_(lo, hi, generator=g))


for _ in range(args.trials):
    n = int(torch.randint(1, args.max_n, (), generator=g))
    d = int(torch.randint(1, args.max_d, (), generator=g))
    leaves = [
        torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True),
        torch.randn(n, d, generator=g, dtype=torch.float64, requires_grad=True),
        torch.tensor(uniform(1.0, 100.0), dtype=torch.float64, requires_grad=True),
        torch.tensor(uniform(-15.0, 5.0), dtype=torch.float64, requires_grad=True),
    ]
    img, txt, scale, bias = leaves
    ni, nt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    chunk = int(torch.randint(1, 64, (), generator=g))
    pairs = [
        ("clip", vlp.losses.clip_loss(img, txt, scale), ClipLoss()(ni, nt, scale)),
        (
            "siglip",
            vlp.losses.siglip_loss(img, txt, scale, bias),
            SigLipLoss()(ni, nt, scale, bias),
        ),
        (
            "siglip_chunked",
            vlp.losses.siglip_loss(img, txt, scale, bias, chunk_size=chunk),
            SigLipLoss()(ni, nt, scale, bias),
        ),
    ]
    for key, ours, ref in pairs:
        err = ((ours - ref).abs() / ref.abs().clamp_min(1e-300)).item()
        worst[f"{key}_value"] = max(worst.get(f"{key}_value", 0.0), err)
        got = torch.autograd.grad(ours, leaves, allow_unused=True, retain_graph=True)
        want = torch.autograd.grad(ref, leaves, allow_unused=True, retain_graph=True)
        for a, b in zip(got, want):
            if a is None or b is None:
                continue
            if b.abs().max() < 1e-10:  # zero in exact arithmetic (D = 1 or N = 1): rounding noise
                skipped += 1
                continue
            err = ((a - b).abs().max() / b.abs().max()).item()
            worst[f"{key}_grad"] = max(worst.get(f"{key}_grad", 0.0), err)

result = {
    "trials": args.trials,
    "shapes": f"N in [1, {args.max_n}), D in [1, {args.max_d})",
    "max_relative_error": worst,
    "skipped_zero_gradients": skipped,
    "torch": torch.__version__,
}
print(json.dumps(result, indent=2))
if args.out:
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
