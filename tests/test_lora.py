"""LoRA for open_clip towers: zero init is exact, only LoRA trains, merging, counts, I/O."""

from __future__ import annotations

from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from _tiny_clip import tiny_clip, tokenizer
from torch import nn
from torch.nn.utils import parametrize

from vlp.adapters import (
    LoRAUpdate,
    apply_lora,
    load_lora_state_dict,
    lora_parameters,
    lora_state_dict,
    merge_lora,
    open_clip_image_tokens,
    open_clip_text_tokens,
)
from vlp.testing import assert_close


def _model(seed: int = 0) -> open_clip.CLIP:
    torch.manual_seed(seed)
    return tiny_clip()


def _inputs(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(3, 3, 64, 64, generator=g)
    text = tokenizer()(["a red circle", "two blue squares left of a cube", "a"])
    return images, text


def _outputs(model: nn.Module, images: torch.Tensor, text: torch.Tensor) -> list[torch.Tensor]:
    return [model.encode_image(images), model.encode_text(text)]


def _perturb(model: nn.Module, seed: int = 2) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in lora_parameters(model):
            p.copy_(0.05 * torch.randn(p.shape, generator=g))


@pytest.mark.parametrize("training", [False, True])
def test_zero_init_is_bit_identical(training: bool) -> None:
    images, text = _inputs()
    # torch's matmul picks its summation order by whether the weight requires grad (even under
    # no_grad). The adapted weights require grad exactly when grad mode is on (through the LoRA
    # matrices), so give the reference's weights the same flag: the comparison is then exact.
    base = _model().requires_grad_(training).train(training)
    adapted = apply_lora(_model()).train(training)
    with torch.set_grad_enabled(training):
        for a, b in zip(_outputs(base, images, text), _outputs(adapted, images, text)):
            assert torch.equal(a, b)


def test_targets_shapes_and_trainable_set() -> None:
    model = apply_lora(_model())
    updates = {
        n: m for n, m in model.named_modules() if isinstance(m, LoRAUpdate)
    }  # name -> update
    adapted = {n.split(".parametrizations.")[0] + "." + n.split(".")[-2] for n in updates}
    blocks = [f"visual.transformer.resblocks.{i}" for i in range(2)]
    blocks += [f"transformer.resblocks.{i}" for i in range(2)]
    expected = {"visual.conv1.weight"}
    for b in blocks:
        expected |= {
            f"{b}.mlp.c_fc.weight",
            f"{b}.mlp.c_proj.weight",
            f"{b}.attn.in_proj_weight",
            f"{b}.attn.out_proj.weight",
        }
    assert adapted == expected
    conv = updates["visual.conv1.parametrizations.weight.0"]
    assert conv.lora_A.shape == (4 * 8, 3 * 8) and conv.lora_B.shape == (64 * 8, 4 * 8)
    in_proj = updates["visual.transformer.resblocks.0.attn.parametrizations.in_proj_weight.0"]
    assert in_proj.lora_A.shape == (4, 64) and in_proj.lora_B.shape == (192, 4)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {n for n, _ in model.named_parameters() if "lora_" in n}
    assert len(trainable) == 2 * len(expected)
    # Not adapted, frozen: projections, embeddings, norms, biases, the logit scale.
    for name in ("visual.proj", "text_projection", "token_embedding.weight", "logit_scale"):
        assert not dict(model.named_parameters())[name].requires_grad


@pytest.mark.parametrize(
    ("name", "count"), [("ViT-B-32", 4_141_056), ("ViT-B-16", 1_772_544), ("ViT-L-14", 2_967_856)]
)
def test_trainable_counts_match_the_release(name: str, count: int) -> None:
    # Spec section 6 (computed from the release); meta tensors: no memory, no compute.
    with torch.device("meta"):
        model = apply_lora(open_clip.CLIP(**open_clip.get_model_config(name)))
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == count


def test_update_is_w_plus_scaled_ba() -> None:
    model = _model()
    fc = model.visual.transformer.resblocks[0].mlp.c_fc
    w = fc.weight.detach().clone()
    apply_lora(model, rank=3, scaling=0.5, targets=("linear",))
    _perturb(model)
    update = fc.parametrizations.weight[0]
    x = torch.randn(5, 64)
    lora = 0.5 * (x @ update.lora_A.T) @ update.lora_B.T
    assert_close(fc(x), F.linear(x, w, fc.bias) + lora)
    # Only the requested target was adapted.
    assert not parametrize.is_parametrized(model.visual.conv1)
    assert not parametrize.is_parametrized(model.visual.transformer.resblocks[0].attn)


def test_only_lora_parameters_change_in_training() -> None:
    model = apply_lora(_model())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    images, text = _inputs()
    for _ in range(2):
        image, txt = _outputs(model, images, text)
        loss = -(F.normalize(image, dim=-1) * F.normalize(txt, dim=-1)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = model.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all("lora_" in k for k in changed)
    assert any(k.endswith("lora_B") for k in changed)  # B leaves zero: the model now differs


@pytest.mark.parametrize("training", [True, False])
def test_merge_equals_unmerged_forward(training: bool) -> None:
    # Eval + no_grad is nn.MultiheadAttention's fused fast path (batch_first towers), train
    # mode its F.multi_head_attention_forward path: both must read the adapted in_proj.
    images, text = _inputs()
    model = apply_lora(_model()).train(training)
    _perturb(model)
    with torch.no_grad():
        unmerged = _outputs(model, images, text)
        merge_lora(model)
        merged = _outputs(model, images, text)
    for a, b in zip(merged, unmerged):
        assert_close(a, b)
    assert not any(parametrize.is_parametrized(m) for m in model.modules())
    assert set(model.state_dict()) == set(_model().state_dict())
    # The weights moved: merging kept the update.
    assert (model.visual.conv1.weight - _model().visual.conv1.weight).abs().max() > 1e-3


def test_reference_attention_init_and_its_zeroed_b() -> None:
    images, text = _inputs()
    base = _outputs(_model().requires_grad_(False), images, text)  # frozen, as in apply_lora
    quirky = apply_lora(_model(), attention_init="reference")
    in_proj = quirky.visual.transformer.resblocks[0].attn.parametrizations.in_proj_weight[0]
    assert in_proj.lora_B.abs().max() > 0  # Xavier, not zero
    out_proj = quirky.visual.transformer.resblocks[0].attn.out_proj.parametrizations.weight[0]
    assert torch.all(out_proj.lora_B == 0)  # everything else still starts at zero
    with torch.no_grad():
        assert (quirky.encode_image(images) - base[0]).abs().max() > 1e-4
        # Spec property 11: with the in_proj B zeroed the LoRA attention is the base one.
        for m in quirky.modules():
            if isinstance(m, LoRAUpdate):
                m.lora_B.zero_()
        for a, b in zip(_outputs(quirky, images, text), base):
            assert torch.equal(a, b)


def test_state_dict_round_trip(tmp_path: Path) -> None:
    from safetensors.torch import load_file, save_file

    model = apply_lora(_model())
    _perturb(model)
    state = lora_state_dict(model)
    assert len(state) == len(lora_parameters(model)) == 34
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "lora.safetensors"))
    fresh = apply_lora(_model())
    load_lora_state_dict(fresh, load_file(str(tmp_path / "lora.safetensors")))
    images, text = _inputs()
    with torch.no_grad():
        for a, b in zip(_outputs(fresh, images, text), _outputs(model, images, text)):
            assert torch.equal(a, b)
    with pytest.raises(ValueError, match="exactly the model's 34 LoRA tensors"):
        load_lora_state_dict(fresh, dict(list(state.items())[:-1]))


def test_dense_token_adapters_see_the_update() -> None:
    images, text = _inputs()
    model = apply_lora(_model())
    _perturb(model)
    with torch.no_grad():
        assert_close(open_clip_image_tokens(model, images).pooled, model.encode_image(images))
        assert_close(open_clip_text_tokens(model, text).pooled, model.encode_text(text))


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="rank must be an int >= 1, got 0"):
        apply_lora(_model(), rank=0)
    with pytest.raises(TypeError, match="rank must be an int, got float"):
        apply_lora(_model(), rank=2.0)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="targets must be drawn from"):
        apply_lora(_model(), targets=("mlp",))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="targets must be a sequence"):
        apply_lora(_model(), targets="linear")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="attention_init must be 'zero' or 'reference'"):
        apply_lora(_model(), attention_init="xavier")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="already has LoRA updates"):
        apply_lora(apply_lora(_model()))
    with pytest.raises(ValueError, match="no layer of Sequential matches"):
        apply_lora(nn.Sequential(nn.ReLU()))
    with pytest.raises(ValueError, match="square, ungrouped kernel"):
        apply_lora(nn.Sequential(nn.Conv2d(3, 4, (3, 5))), targets=("conv",))
