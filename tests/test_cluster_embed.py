"""Cluster masking's embedding + RGB similarity variant (release ``use_embed``, spec A6)."""

from __future__ import annotations

import open_clip
import pytest
import torch
import torch.nn.functional as F
from open_clip.model import CLIPTextCfg, CLIPVisionCfg

from vlp.adapters import MaskedImageEncoder
from vlp.masking import ClusterMasking, embedding_rgb_scores, embedding_weight


def _inputs(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    images = torch.randn(2, 3, 8, 12, generator=g, dtype=torch.float64)  # 2x3 grid of 4 px
    embeddings = torch.randn(2, 6, 5, generator=g, dtype=torch.float64)
    anchors = torch.tensor([[0, 4], [5, 2]])
    return images, embeddings, anchors


def _reference(images, embeddings, anchors, w):  # type: ignore[no-untyped-def]
    """Element by element with F.cosine_similarity, float64."""
    out = torch.empty(2, 6, dtype=torch.float64)
    for b in range(2):
        patches = [
            images[b, :, r * 4 : r * 4 + 4, c * 4 : c * 4 + 4].reshape(-1)
            for r in range(2)
            for c in range(3)
        ]
        for j in range(6):
            best = -float("inf")
            for a in anchors[b].tolist():
                rgb = F.cosine_similarity(patches[a], patches[j], dim=0)
                emb = F.cosine_similarity(embeddings[b, a], embeddings[b, j], dim=0)
                best = max(best, float(w * emb + (1 - w) * rgb))
            out[b, j] = best
    return out


@pytest.mark.parametrize("w", [0.0, 0.25, 1.0])
def test_scores_match_elementwise_reference(w: float) -> None:
    images, embeddings, anchors = _inputs()
    got = embedding_rgb_scores(images, embeddings, anchors, 4, embed_weight=w)
    assert got.dtype == torch.float64
    torch.testing.assert_close(got, _reference(images, embeddings, anchors, w), rtol=0, atol=1e-12)
    # Anchors are at cosine 1 with themselves in both terms.
    for b in range(2):
        assert torch.allclose(got[b, anchors[b]], torch.ones(2, dtype=torch.float64))


def test_weight_schedule_and_errors() -> None:
    assert embedding_weight(0) == 0.0
    assert embedding_weight(8) == 0.25
    assert embedding_weight(16, ramp_epochs=32) == 0.5
    assert embedding_weight(40) == 1.0
    with pytest.raises(ValueError, match="epoch"):
        embedding_weight(-1)
    with pytest.raises(ValueError, match="ramp_epochs"):
        embedding_weight(1, ramp_epochs=0)
    images, embeddings, anchors = _inputs()
    with pytest.raises(ValueError, match="embed_weight"):
        embedding_rgb_scores(images, embeddings, anchors, 4, embed_weight=1.5)
    with pytest.raises(ValueError, match="embeddings"):
        embedding_rgb_scores(images, embeddings[:, :5], anchors, 4, embed_weight=0.5)
    with pytest.raises(ValueError, match="anchors"):
        embedding_rgb_scores(images, embeddings, anchors + 6, 4, embed_weight=0.5)
    with pytest.raises(TypeError, match="anchors"):
        embedding_rgb_scores(images, embeddings, anchors.int(), 4, embed_weight=0.5)


def test_module_option_masks_by_embedding_at_full_weight() -> None:
    # Pixels are noise, embeddings form two exact groups: at w = 1 (epoch 32) a fixed
    # threshold of 0.9 masks exactly the anchor's embedding group.
    g = torch.Generator().manual_seed(3)
    images = torch.randn(1, 3, 8, 12, generator=g)
    group = torch.tensor([0, 0, 1, 1, 0, 1])
    embeddings = torch.eye(4)[group].unsqueeze(0)  # (1, 6, 4)
    masking = ClusterMasking(
        4,
        threshold=0.9,
        anchor_fraction=0.1,
        min_ratio=0.0,
        features="embedding_rgb",
        generator=torch.Generator().manual_seed(0),
    )
    with pytest.raises(ValueError, match="embeddings"):
        masking(images)
    masking.set_epoch(32)
    assert masking.embed_weight == 1.0 and masking.needs_embeddings
    keep, pad = masking(images, embeddings)
    kept = keep[0][~pad[0]]
    # One anchor: its group is masked, the other group is kept.
    assert kept.numel() == 3
    assert len(set(group[kept].tolist())) == 1
    masking.set_epoch(0)  # w = 0: pixel noise, nothing but the anchor exceeds 0.9
    keep, pad = masking(images, embeddings)
    assert int((~pad[0]).sum()) == 5
    assert "embedding_rgb" in repr(masking)
    with pytest.raises(ValueError, match="features"):
        ClusterMasking(4, features="embedding")  # type: ignore[arg-type]


def test_mask_tokens_and_encoder_pass_the_patch_embeddings() -> None:
    torch.manual_seed(0)
    model = open_clip.CLIP(
        embed_dim=16,
        vision_cfg=CLIPVisionCfg(layers=1, width=32, head_width=8, patch_size=8, image_size=32),
        text_cfg=CLIPTextCfg(context_length=8, vocab_size=64, width=32, heads=4, layers=1),
    )
    seen: list[torch.Tensor] = []

    class Spy(ClusterMasking):
        def forward(self, images, embeddings=None):  # type: ignore[no-untyped-def,override]
            seen.append(embeddings)
            return super().forward(images, embeddings)

    spy = Spy(8, threshold=0.5, features="embedding_rgb")
    encoder = MaskedImageEncoder(model, spy).train()
    images = torch.randn(2, 3, 32, 32)
    out = encoder(images)
    assert out.tokens.shape[0] == 2
    v = model.visual
    with torch.no_grad():
        x = v.conv1(images).flatten(2).transpose(1, 2) + v.positional_embedding[1:]
    torch.testing.assert_close(seen[-1], x)
    tokens = torch.cat([torch.zeros(2, 1, 32), x], dim=1)
    kept, pad = spy.mask_tokens(tokens, images)
    torch.testing.assert_close(seen[-1], x)
    assert kept.shape[1] == pad.shape[1]
