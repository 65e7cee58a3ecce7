"""S-SMKE model parts: token types, shared and post-LN blocks, head, student builder, loading."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import TextTransformer
from safetensors.torch import save_file
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from vlp.adapters import (
    OpenClipTextEncoder,
    TimmViTEncoder,
    load_pretrained,
    load_state_dict_file,
)
from vlp.heads import FrozenTeacher
from vlp.losses import ssmke_loss
from vlp.models import (
    SSMKE,
    PostLNBlock,
    SharedBlock,
    SSMKEHead,
    TokenTypeEmbedding,
    build_ssmke,
)
from vlp.testing import assert_close

F64 = torch.float64


def _vit(depth: int = 4, **kwargs: object) -> VisionTransformer:
    return VisionTransformer(
        img_size=16, patch_size=8, embed_dim=16, depth=depth, num_heads=2, mlp_ratio=2.0,
        num_classes=5, **kwargs,  # type: ignore[arg-type]
    )  # fmt: skip


def _text(layers: int = 3) -> TextTransformer:
    return TextTransformer(
        context_length=8, vocab_size=50, width=16, heads=2, layers=layers, mlp_ratio=2.0,
        output_dim=8,
    )  # fmt: skip


# ------------------------------------------------------------------- token-type embedding


def test_token_type_embedding_starts_tiny(generator: torch.Generator) -> None:
    tte = TokenTypeEmbedding(2, 12)
    e = tte.embedding.weight.detach()
    scaled = tte.gamma.detach() * e
    assert bool((scaled.abs() <= 1e-5 * e.abs() * (1 + 1e-6)).all())
    assert not torch.equal(e[0], e[1])  # image and text types differ
    x = torch.randn(2, 3, 12, generator=generator)
    for t in (0, 1):
        out = tte(x, t)
        assert_close(out, x + 1e-5 * e[t])
        assert (out - x).abs().max() < 1e-4
    assert not torch.equal(tte(x, 0), tte(x, 1))
    with pytest.raises(ValueError, match=r"type_id must be an int in \[0, 1\]"):
        tte(x, 2)
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, 12\)"):
        tte(x[..., :5], 0)
    with pytest.raises(TypeError, match="type_id must be an int"):
        tte(x, 0.0)  # type: ignore[arg-type]


# ------------------------------------------------------------------------- shared block


def _reference_block(
    block: SharedBlock, x: torch.Tensor, pad: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A pre-LN block written out: attention with explicit softmax and per-head loops."""
    d, h = block.dim, block.heads
    hd = d // h
    w = block.qkv.weight
    assert block.q_bias is not None and block.v_bias is not None

    def ln(t: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        mu = t.mean(-1, keepdim=True)
        var = ((t - mu) ** 2).mean(-1, keepdim=True)
        return (t - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias

    y = ln(x, block.norm1)
    q = y @ w[:d].T + block.q_bias
    k = y @ w[d : 2 * d].T  # no key bias
    v = y @ w[2 * d :].T + block.v_bias
    heads = []
    for i in range(h):
        sl = slice(i * hd, (i + 1) * hd)
        scores = q[..., sl] @ k[..., sl].transpose(1, 2) / math.sqrt(hd)
        if pad is not None:
            scores = scores.masked_fill(pad[:, None, :], float("-inf"))
        heads.append(scores.softmax(-1) @ v[..., sl])
    attn = torch.cat(heads, -1) @ block.proj.weight.T + block.proj.bias
    h1 = x + 0.2 * attn
    inter = ln(h1, block.norm2) @ block.fc1.weight.T + block.fc1.bias
    mlp = 0.5 * inter * (1 + torch.erf(inter / math.sqrt(2)))
    out = h1 + 0.2 * (mlp @ block.fc2.weight.T + block.fc2.bias)
    return inter, out


def test_shared_block_matches_reference(generator: torch.Generator) -> None:
    torch.manual_seed(0)
    block = SharedBlock(16, 4, 4.0, dtype=F64)
    with torch.no_grad():  # non-trivial biases and norms
        for p in (block.q_bias, block.v_bias, block.norm1.weight, block.norm2.bias):
            assert p is not None
            p.add_(0.3 * torch.randn(p.shape, generator=generator, dtype=F64))
    assert torch.equal(block.gamma_1, torch.full((16,), 0.2, dtype=F64))
    x = torch.randn(3, 5, 16, generator=generator, dtype=F64)
    pad = torch.tensor([[False] * 5, [False] * 3 + [True] * 2, [False] + [True] * 4])
    for mask in (None, pad):
        inter, out = block(x, mask)
        ref_inter, ref_out = _reference_block(block, x, mask)
        assert inter.shape == (3, 5, 64)  # 4 D
        assert_close(inter, ref_inter)
        assert_close(out, ref_out)
    # Every Linear is trunc-normal(std 0.02, cut at +-2 as torch's default) at init; biases zero.
    assert float(block.fc1.weight.detach().std()) == pytest.approx(0.02, rel=0.1)
    assert torch.equal(block.proj.bias, torch.zeros(16, dtype=F64))


def test_padded_keys_do_not_affect_unpadded_tokens(generator: torch.Generator) -> None:
    block = SharedBlock(16, 2, dtype=F64)
    x = torch.randn(2, 6, 16, generator=generator, dtype=F64)
    pad = torch.tensor([[False] * 4 + [True] * 2, [False] * 2 + [True] * 4])
    changed = x.clone()
    changed[pad] = torch.randn(int(pad.sum()), 16, generator=generator, dtype=F64) * 10
    a_inter, a_out = block(x, pad)
    b_inter, b_out = block(changed, pad)
    assert torch.equal(a_out[~pad], b_out[~pad])
    assert torch.equal(a_inter[~pad], b_inter[~pad])
    assert not torch.equal(block(changed)[1][:, 0], a_out[:, 0])  # without the mask they leak


def test_shared_block_bad_input() -> None:
    block = SharedBlock(8, 2)
    with pytest.raises(ValueError, match="heads must divide dim"):
        SharedBlock(8, 3)
    with pytest.raises(ValueError, match=r"x must have shape \(B, T, 8\)"):
        block(torch.randn(2, 3, 4))
    with pytest.raises(TypeError, match="key_padding must have dtype torch.bool"):
        block(torch.randn(2, 3, 8), torch.zeros(2, 3))
    with pytest.raises(ValueError, match="at least one unpadded token"):
        block(torch.randn(2, 3, 8), torch.tensor([[False] * 3, [True] * 3]))


def test_shared_block_gradcheck(generator: torch.Generator) -> None:
    block = SharedBlock(8, 2, 2.0, dtype=F64)
    x = torch.randn(2, 3, 8, generator=generator, dtype=F64, requires_grad=True)
    pad = torch.tensor([[False, False, True], [False, False, False]])
    assert torch.autograd.gradcheck(lambda t: block(t, pad), (x,))


# --------------------------------------------------------------------- post-LN and head


def test_post_ln_block_matches_reference(generator: torch.Generator) -> None:
    torch.manual_seed(1)
    block = PostLNBlock(16, 2, mlp_ratio=2.0, qkv_bias=True).double()
    x = torch.randn(2, 5, 16, generator=generator, dtype=F64)
    a = block.attn
    b, t, d = x.shape
    qkv = (x @ a.qkv.weight.T + a.qkv.bias).view(b, t, 3, 2, 8).permute(2, 0, 3, 1, 4)
    att = (qkv[0] @ qkv[1].transpose(-1, -2) / math.sqrt(8)).softmax(-1) @ qkv[2]
    attn = att.transpose(1, 2).reshape(b, t, d) @ a.proj.weight.T + a.proj.bias
    h = F.layer_norm(x + attn, (d,), block.norm1.weight, block.norm1.bias, block.norm1.eps)
    m = block.mlp
    mlp = F.gelu(h @ m.fc1.weight.T + m.fc1.bias) @ m.fc2.weight.T + m.fc2.bias
    ref = F.layer_norm(h + mlp, (d,), block.norm2.weight, block.norm2.bias, block.norm2.eps)
    assert_close(block(x), ref)
    # A timm ViT accepts it as block_fn.
    vit = _vit(block_fn=PostLNBlock)
    assert isinstance(vit.blocks[0], PostLNBlock)


def test_kd_head(generator: torch.Generator) -> None:
    head = SSMKEHead(8, 5, dtype=F64)
    x = torch.randn(3, 8, generator=generator, dtype=F64)
    expected = F.layer_norm(x, (8,), eps=1e-6) @ head.proj.weight.T + head.proj.bias
    assert_close(head(x), expected)
    assert head(x).shape == (3, 5)


# -------------------------------------------------------------------- encoders, builder


def _first_blocks_vit(vit: VisionTransformer, images: torch.Tensor, k: int) -> torch.Tensor:
    x = vit.norm_pre(vit._pos_embed(vit.patch_embed(images)))
    for blk in vit.blocks[:k]:
        x = blk(x)
    return x


def test_timm_vit_encoder_keeps_first_blocks(generator: torch.Generator) -> None:
    torch.manual_seed(0)
    full = _vit().eval()
    images = torch.randn(2, 3, 16, 16, generator=generator)
    with torch.no_grad():
        expected = _first_blocks_vit(full, images, 2)
        encoder = TimmViTEncoder(copy.deepcopy(full), 2).eval()
        tokens = encoder(images)
    assert tokens.shape == (2, 5, 16)  # CLS + 4 patches
    assert_close(tokens, expected)
    assert len(encoder.vit.blocks) == 2
    assert not any(k.startswith(("norm.", "head.")) for k in encoder.state_dict())
    with pytest.raises(ValueError, match=r"num_layers must lie in \[1, 4\]"):
        TimmViTEncoder(_vit(), 5)
    with pytest.raises(TypeError, match="timm VisionTransformer"):
        TimmViTEncoder(nn.Linear(2, 2), 1)


def _first_blocks_text(text: TextTransformer, ids: torch.Tensor, k: int) -> torch.Tensor:
    x, mask = text._embeds(ids)
    for blk in text.transformer.resblocks[:k]:
        x = blk(x, attn_mask=mask)
    return x


def test_open_clip_text_encoder_keeps_first_blocks(generator: torch.Generator) -> None:
    torch.manual_seed(0)
    full = _text().eval()
    ids = torch.randint(1, 50, (3, 8), generator=generator)
    ids[1, 5:] = 0
    with torch.no_grad():
        expected = _first_blocks_text(full, ids, 2)
        encoder = OpenClipTextEncoder(copy.deepcopy(full), 2, causal=True).eval()
        tokens = encoder(ids)
        assert_close(tokens, expected)
        # Bidirectional: padded keys masked; changing padded ids leaves the text tokens alone.
        bidi = OpenClipTextEncoder(copy.deepcopy(full), 2).eval()  # the default
        assert not bidi.causal
        other = ids.clone()
        other[1, 5:] = 7
        pad = ids == 0
        a, b = bidi(ids, pad), bidi(other, pad)
        assert torch.equal(a[1, :5], b[1, :5])
        assert not torch.equal(a[1, :5], tokens[1, :5])  # it is not causal
    with pytest.raises(ValueError, match="at most 8 tokens"):
        encoder(torch.ones(1, 9, dtype=torch.long))


def test_ssmke_student_end_to_end(generator: torch.Generator) -> None:
    torch.manual_seed(0)
    model = build_ssmke(_vit(), _text(), (2, 1), heads=2, kd_dim=6)
    assert isinstance(model, SSMKE)
    images = torch.randn(3, 3, 16, 16, generator=generator)
    ids = torch.randint(1, 50, (3, 8), generator=generator)
    ids[:, 6:] = 0
    img, txt = model.encode_image(images), model.encode_text(ids)
    assert img.x_interm.shape == (3, 64) and img.x.shape == (3, 16) and img.kd.shape == (3, 6)
    assert_close(img.x.norm(dim=-1), torch.ones(3))
    assert_close(txt.x_interm.norm(dim=-1), torch.ones(3))
    # Changing the ids at padded positions changes nothing (padded keys are masked).
    other = ids.clone()
    other[:, 6:] = 9
    again = model.encode_text(other, ids == 0)
    for u, v in zip(txt, again):
        assert torch.equal(u, v)
    # A training step through the full objective reaches every trainable part.
    teacher = FrozenTeacher(_vit(), lambda m, x: m.forward_features(x)[:, 0])
    target = teacher(images)
    assert target.shape == (3, 16)
    model.kd_head = SSMKEHead(16, 16)
    img, txt = model.encode_image(images), model.encode_text(ids)
    ssmke_loss(img, txt, target, None, 1 / 0.07, 10.0, 10.0).backward()
    for name, p in model.named_parameters():
        if name.startswith("text_encoder.text.positional_embedding"):
            continue
        assert p.grad is not None, name
    with pytest.raises(ValueError, match="same width"):
        build_ssmke(
            _vit(), TextTransformer(context_length=8, vocab_size=50, width=8, heads=2, layers=1), 1
        )


# ------------------------------------------------------------------------------ loading


def test_load_truncated_vit_from_checkpoint_files(
    tmp_path: Path, generator: torch.Generator
) -> None:
    torch.manual_seed(3)
    pretrained = _vit().eval()
    state = pretrained.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "vit.safetensors"))
    torch.save({"model": state, "epoch": 3}, tmp_path / "vit.pt")
    torch.save({f"visual.{k}": v for k, v in state.items()}, tmp_path / "clip.pth")
    images = torch.randn(2, 3, 16, 16, generator=generator)
    with torch.no_grad():
        expected = _first_blocks_vit(pretrained, images, 2)
    for name, prefix in (("vit.safetensors", ""), ("vit.pt", ""), ("clip.pth", "visual.")):
        torch.manual_seed(99)
        encoder = TimmViTEncoder(_vit(), 2).eval()
        ignored = encoder.load_pretrained(tmp_path / name, prefix=prefix)
        assert {k.split(".")[0] for k in ignored} == {"blocks", "norm", "head"}
        assert all(k.startswith(("blocks.2.", "blocks.3.", "norm.", "head.")) for k in ignored)
        with torch.no_grad():
            assert_close(encoder(images), expected, msg=name)
    assert set(load_state_dict_file(tmp_path / "vit.pt")) == set(state)


def test_load_data2vec2_key_layout_with_rename(tmp_path: Path, generator: torch.Generator) -> None:
    # The fairseq Data2Vec 2.0 layout (as the S-SMKE reference remaps it): the embedding
    # parts sit under `modality_encoders.IMAGE.` with their own names, the blocks at the
    # top level, plus decoder and EMA entries. The rename pairs of docs/ssmke.md load it;
    # `prefix=` cannot (it would drop the top-level blocks).
    torch.manual_seed(5)
    kwargs: dict[str, object] = {"block_fn": PostLNBlock, "no_embed_class": True, "pre_norm": True}
    pretrained = _vit(**kwargs).eval()
    to_fairseq = {
        "cls_token": "modality_encoders.IMAGE.extra_tokens",
        "pos_embed": "modality_encoders.IMAGE.fixed_positional_encoder.positions",
        "patch_embed.": "modality_encoders.IMAGE.local_encoder.",
        "norm_pre.": "modality_encoders.IMAGE.context_encoder.norm.",
    }
    fairseq: dict[str, torch.Tensor] = {}
    for key, value in pretrained.state_dict().items():
        if key.startswith(("norm.", "head.")):
            continue  # Data2Vec 2.0 has no final norm or head
        for old, new in to_fairseq.items():
            if key.startswith(old):
                key = new + key[len(old) :]
                break
        fairseq[key] = value
    fairseq["modality_encoders.IMAGE.decoder.proj.weight"] = torch.zeros(3, 3)
    fairseq["_ema"] = torch.zeros(2)
    torch.save({"model": fairseq, "num_updates": 7}, tmp_path / "base_imagenet.pt")
    rename = [
        ("modality_encoders.IMAGE.extra_tokens", "cls_token"),
        ("modality_encoders.IMAGE.fixed_positional_encoder.positions", "pos_embed"),
        ("modality_encoders.IMAGE.local_encoder.", "patch_embed."),
        ("modality_encoders.IMAGE.context_encoder.norm.", "norm_pre."),
    ]
    encoder = TimmViTEncoder(_vit(**kwargs), 2).eval()
    unused = encoder.load_pretrained(tmp_path / "base_imagenet.pt", rename=rename)
    assert {k.split(".")[0] for k in unused} == {"blocks", "modality_encoders", "_ema"}
    images = torch.randn(2, 3, 16, 16, generator=generator)
    with torch.no_grad():
        assert_close(encoder(images), _first_blocks_vit(pretrained, images, 2))
    with pytest.raises(ValueError, match="missing"):
        TimmViTEncoder(_vit(**kwargs), 2).load_pretrained(
            tmp_path / "base_imagenet.pt", prefix="modality_encoders.IMAGE."
        )


def test_load_text_tower_from_a_full_open_clip_checkpoint(
    tmp_path: Path, generator: torch.Generator
) -> None:
    torch.manual_seed(4)
    clip = open_clip.CLIP(
        embed_dim=8,
        vision_cfg=open_clip.model.CLIPVisionCfg(
            image_size=16, patch_size=8, width=16, layers=1, head_width=8
        ),
        text_cfg=open_clip.model.CLIPTextCfg(
            context_length=8, vocab_size=50, width=16, heads=2, layers=3, mlp_ratio=2.0
        ),
    ).eval()
    save_file(
        {k: v.contiguous() for k, v in clip.state_dict().items()},
        str(tmp_path / "clip.safetensors"),
    )
    ids = torch.randint(1, 50, (2, 8), generator=generator)
    with torch.no_grad():
        x = clip.token_embedding(ids) + clip.positional_embedding
        for blk in clip.transformer.resblocks[:2]:
            x = blk(x, attn_mask=clip.attn_mask)
    encoder = OpenClipTextEncoder(_text(), 2, causal=True).eval()  # as the checkpoint ran
    ignored = encoder.load_pretrained(tmp_path / "clip.safetensors")
    assert any(k.startswith("visual.") for k in ignored)
    assert "transformer.resblocks.2.ln_1.weight" in ignored
    with torch.no_grad():
        assert_close(encoder(ids), x)


def test_load_pretrained_errors(tmp_path: Path) -> None:
    encoder = TimmViTEncoder(_vit(), 2)
    state = _vit().state_dict()
    with pytest.raises(ValueError, match=r"are missing \(prefix='visual\.'\)"):
        load_pretrained(encoder.vit, state, prefix="visual.")
    bad = dict(state)
    bad["cls_token"] = torch.zeros(1, 1, 8)
    with pytest.raises(
        ValueError, match=r"'cls_token' must have shape \(1, 1, 16\), got \(1, 1, 8\)"
    ):
        encoder.load_pretrained(bad)
    # rename maps foreign names (e.g. Data2Vec2's) onto timm's.
    foreign = {k.replace("cls_token", "extra_tokens"): v for k, v in state.items()}
    encoder.load_pretrained(foreign, rename=[("extra_tokens", "cls_token")])
    assert torch.equal(encoder.vit.cls_token, state["cls_token"])
    with pytest.raises(FileNotFoundError, match="existing checkpoint file"):
        load_state_dict_file(tmp_path / "nope.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(ValueError, match="must hold a state dict"):
        load_state_dict_file(tmp_path / "list.pt")


def test_default_text_student_pools_a_caption_dependent_cls(generator: torch.Generator) -> None:
    # S-SMKE pools the start token ("CLS") after the shared block. In a causal tower that token
    # attends only to itself, so before the shared block it is the same for every caption; the
    # default (bidirectional, like the paper's BERT student) makes it depend on the caption.
    torch.manual_seed(0)
    text = _text().eval()
    ids = torch.randint(1, 50, (2, 8), generator=generator)
    ids[:, 0] = 3  # the same start token, different captions after it
    ids[0, 6:] = 0
    assert not torch.equal(ids[0], ids[1])
    with torch.no_grad():
        default = build_ssmke(_vit(), copy.deepcopy(text), (2, 1), heads=2).eval()
        cls = default.text_encoder(ids, ids == 0)[:, 0]
        assert (cls[0] - cls[1]).abs().max() > 1e-3
        causal = build_ssmke(_vit(), copy.deepcopy(text), (2, 1), heads=2, causal_text=True).eval()
        cls = causal.text_encoder(ids, ids == 0)[:, 0]
        assert torch.equal(cls[0], cls[1])  # the documented consequence of causal_text=True
