"""The contrastive losses of vlp on random features, in a few seconds on a CPU.

A placeholder for `make demo` until the CLIP recipe on the embedded data set lands:
it prints the CLIP and SigLIP losses of random features, shows that the chunked
SigLIP path equals the full one, and optimises free image/text embeddings with each
loss so that retrieval recall climbs from chance to 1.
"""

import argparse
import math
import time

import torch

import vlp
from vlp.eval import retrieval_recall, similarity_matrix

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--batch", type=int, default=128)
parser.add_argument("--dim", type=int, default=64)
parser.add_argument("--steps", type=int, default=30)
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()
torch.set_num_threads(1)  # the problem is tiny: one thread avoids scheduling overhead

g = torch.Generator().manual_seed(args.seed)
image = torch.randn(args.batch, args.dim, generator=g)
text = torch.randn(args.batch, args.dim, generator=g)
pairs = torch.arange(args.batch)  # caption i belongs to image i

print(f"random features: N={args.batch}, D={args.dim}")
clip = vlp.losses.clip_loss(image, text, logit_scale=1 / 0.07)
print(
    f"  clip_loss   (scale 1/0.07)        = {clip.item():.4f}   (uniform logits would give log N = {math.log(args.batch):.4f})"
)
full = vlp.losses.siglip_loss(image, text, logit_scale=10.0, logit_bias=-10.0)
chunked = vlp.losses.siglip_loss(image, text, logit_scale=10.0, logit_bias=-10.0, chunk_size=32)
print(f"  siglip_loss (scale 10, bias -10)  = {full.item():.4f}")
print(
    f"  siglip_loss, chunk_size=32        = {chunked.item():.4f}   (|diff| = {abs(full - chunked).item():.1e}, never forms the {args.batch}x{args.batch} matrix)"
)

for name, loss_fn in [
    ("ClipLoss", vlp.losses.ClipLoss()),
    ("SigLipLoss", vlp.losses.SigLipLoss(chunk_size=64)),
]:
    img = image.clone().requires_grad_()
    txt = text.clone().requires_grad_()
    opt = torch.optim.Adam([img, txt, *loss_fn.parameters()], lr=0.1)
    r1 = retrieval_recall(similarity_matrix(img.detach(), txt.detach()), pairs, ks=(1,))
    print(f"\noptimising free embeddings with {name} for {args.steps} steps")
    print(
        f"  step   0: R@1 image->text {r1['image_to_text_R@1']:.3f}, text->image {r1['text_to_image_R@1']:.3f}"
    )
    start = time.perf_counter()
    for step in range(1, args.steps + 1):
        loss = loss_fn(img, txt)
        opt.zero_grad()
        loss.backward()
        opt.step()
        loss_fn.clamp_()
        if step % (args.steps // 3) == 0 or step == args.steps:
            r1 = retrieval_recall(similarity_matrix(img.detach(), txt.detach()), pairs, ks=(1,))
            scale = loss_fn.logit_scale().item()
            print(
                f"  step {step:3d}: loss {loss.item():.4f}, scale {scale:6.2f}, "
                f"R@1 image->text {r1['image_to_text_R@1']:.3f}, text->image {r1['text_to_image_R@1']:.3f}"
            )
    print(f"  ({time.perf_counter() - start:.2f} s)")
