"""docs/fsc_clip.md's worked example runs as printed (on the tiny model, offline)."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "examples"))
import common  # noqa: E402

# What the page loads (network) and what stands in for it here.
PRETRAINED = 'model = open_clip.create_model("ViT-B-32", pretrained="openai")'
TOKENIZER = 'tokenize = open_clip.get_tokenizer("ViT-B-32")'


def test_worked_example_runs_from_an_openai_scale() -> None:
    page = (ROOT / "docs" / "fsc_clip.md").read_text()
    code = re.findall(r"```python\n(.*?)```", page, re.S)[0]
    assert PRETRAINED in code and TOKENIZER in code
    torch.manual_seed(0)
    model = common.tiny_clip()
    with torch.no_grad():
        # ln 100 rounded up, as OpenAI checkpoints hold it (even float32 ln 100 gives exp > 100).
        model.logit_scale.fill_(float(torch.tensor(4.6052, dtype=torch.float16)))
    assert model.logit_scale.detach().exp().item() > 100.0
    captions = ["a red cube left of a blue ball", "two dogs run on the grass.", "a cat"]
    namespace = {
        "model": model,
        "tokenize": common.tokenizer(),
        "images": torch.randn(3, 3, 64, 64, generator=torch.Generator().manual_seed(1)),
        "captions": captions,
    }
    code = code.replace(PRETRAINED, "").replace(TOKENIZER, "")

    class Optimizer:  # the page's `optimizer` is the user's; record that it was stepped
        steps = 0

        def step(self) -> None:
            self.steps += 1

    namespace["optimizer"] = optimizer = Optimizer()
    exec(compile(code, "docs/fsc_clip.md", "exec"), namespace)
    loss_fn = namespace["loss_fn"]
    assert optimizer.steps == 1
    # The pretrained scale enters clamped to the release's bound, s <= 100.
    assert float(loss_fn.logit_scale().detach()) == pytest.approx(100.0, rel=1e-6)
    # The page's comment: the defaults are lambda_g 0.5, lambda_l 0.2.
    assert (loss_fn.lambda_global, loss_fn.lambda_local) == (0.5, 0.2)
    loss = namespace["loss"]
    assert loss.requires_grad and torch.isfinite(loss) and float(loss.detach()) > 0
