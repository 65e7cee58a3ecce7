"""save_pretrained / from_pretrained / push_to_hub of the weight-carrying modules, offline."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from open_clip.transformer import TextTransformer
from timm.models.vision_transformer import VisionTransformer

from vlp.adapters import OpenClipTextEncoder, TimmViTEncoder
from vlp.heads import COSMOSHead, CrossAttentionPooler
from vlp.losses import LogitScale
from vlp.models import SSMKE, build_ssmke

ROOT = Path(__file__).resolve().parents[1]


def _same_state(a: torch.nn.Module, b: torch.nn.Module) -> None:
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    for key in sa:
        assert sa[key].dtype == sb[key].dtype, key
        assert torch.equal(sa[key], sb[key]), key


def _perturb(module: torch.nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def test_cross_attention_pooler_round_trip(tmp_path):
    pooler = CrossAttentionPooler(16, 2, kdim=8, normalize=False, dtype=torch.float64)
    _perturb(pooler, 0)
    out_dir = pooler.save_pretrained(tmp_path / "pooler")
    assert sorted(p.name for p in out_dir.iterdir()) == ["config.json", "model.safetensors"]
    config = json.loads((out_dir / "config.json").read_text())
    assert config["_vlp_class"] == "vlp.heads.cross_attention.CrossAttentionPooler"
    assert config["dim"] == 16 and config["num_heads"] == 2 and config["kdim"] == 8
    assert config["normalize"] is False and config["dtype"] == {"__torch_dtype__": "float64"}
    assert "device" not in config
    loaded = CrossAttentionPooler.from_pretrained(out_dir)
    assert not loaded.training
    _same_state(pooler, loaded)
    g = torch.Generator().manual_seed(1)
    query = torch.randn(3, 16, generator=g, dtype=torch.float64)
    tokens = torch.randn(3, 5, 8, generator=g, dtype=torch.float64)
    assert torch.equal(pooler.eval()(query, tokens), loaded(query, tokens))


def test_cosmos_head_and_logit_scale_round_trip(tmp_path):
    head = COSMOSHead(16, image_token_dim=12, text_token_dim=10, num_heads=4)
    _perturb(head, 2)
    loaded = COSMOSHead.from_pretrained(head.save_pretrained(tmp_path / "head"))
    _same_state(head, loaded)
    assert loaded.hub_config == head.hub_config
    scale = LogitScale(20.0, max_scale=50.0)
    with torch.no_grad():
        scale.log_scale.fill_(3.5)  # trained away from its initial value
    back = LogitScale.from_pretrained(scale.save_pretrained(tmp_path / "scale"))
    assert float(back().detach()) == float(scale().detach()) and back.max_scale == 50.0
    half = LogitScale.from_pretrained(tmp_path / "scale", dtype=torch.float16)
    assert half.log_scale.dtype == torch.float16
    # a deprecated keyword name is recorded under the current one
    with pytest.warns(DeprecationWarning):
        old_names = LogitScale(init=30.0, learnable=False)
    assert old_names.hub_config["init_scale"] == 30.0
    assert old_names.hub_config["learnable_scale"] is False
    assert "init" not in old_names.hub_config
    again = LogitScale.from_pretrained(old_names.save_pretrained(tmp_path / "old"))
    assert not again.log_scale.requires_grad


def _vit() -> VisionTransformer:
    return VisionTransformer(
        img_size=16, patch_size=8, embed_dim=16, depth=3, num_heads=2, mlp_ratio=2.0
    )


def _text() -> TextTransformer:
    return TextTransformer(
        context_length=8, vocab_size=50, width=16, heads=2, layers=2, mlp_ratio=2.0,
        output_dim=8,
    )  # fmt: skip


def test_ssmke_student_round_trip_with_fresh_encoders(tmp_path):
    torch.manual_seed(0)
    student = build_ssmke(_vit(), _text(), (2, 1), heads=2, kd_dim=6).eval()
    _perturb(student, 3)
    path = student.save_pretrained(tmp_path / "student")
    config = json.loads((path / "config.json").read_text())
    assert config["_vlp_module_arguments"] == {
        "image_encoder": "vlp.adapters.pretrained.TimmViTEncoder",
        "text_encoder": "vlp.adapters.pretrained.OpenClipTextEncoder",
    }
    assert config["dim"] == 16 and config["heads"] == 2 and config["kd_dim"] == 6
    with pytest.raises(
        ValueError, match=r"module argument\(s\) \['image_encoder', 'text_encoder'\]"
    ):
        SSMKE.from_pretrained(path)
    with pytest.raises(ValueError, match="image_encoder was a vlp.adapters.pretrained.TimmViT"):
        SSMKE.from_pretrained(
            path, image_encoder=torch.nn.Identity(), text_encoder=OpenClipTextEncoder(_text(), 1)
        )
    torch.manual_seed(1)  # different random encoders: every weight must come from the file
    loaded = SSMKE.from_pretrained(
        path,
        image_encoder=TimmViTEncoder(_vit(), 2),
        text_encoder=OpenClipTextEncoder(_text(), 1),
    )
    _same_state(student, loaded)
    images = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(4))
    ids = torch.tensor([[49, 5, 7, 0, 0, 0, 0, 0], [49, 9, 3, 4, 2, 0, 0, 0]])
    for a, b in ((student.encode_image(images), loaded.encode_image(images)),
                 (student.encode_text(ids), loaded.encode_text(ids))):  # fmt: skip
        for x, y in zip(a, b):
            assert torch.equal(x, y)


def test_from_pretrained_errors(tmp_path):
    pooler = CrossAttentionPooler(8, 2)
    path = pooler.save_pretrained(tmp_path / "pooler")
    with pytest.raises(ValueError, match="holds a vlp.heads.cross_attention.CrossAttentionPooler"):
        LogitScale.from_pretrained(path)
    with pytest.raises(RuntimeError, match="size mismatch"):
        CrossAttentionPooler.from_pretrained(path, dim=16)  # an override that cannot load
    (path / "model.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="no model.safetensors"):
        CrossAttentionPooler.from_pretrained(path)
    with pytest.raises(FileNotFoundError, match="nor a Hub model id"):
        CrossAttentionPooler.from_pretrained(tmp_path / "missing" / "dir")
    other = LogitScale().save_pretrained(tmp_path / "scale")
    torch.save({}, other / "ignored.pt")
    state = {"log_scale": torch.zeros(()), "extra": torch.zeros(2)}
    from safetensors.torch import save_file

    save_file(state, str(other / "model.safetensors"))
    with pytest.raises(ValueError, match=r"unexpected \['extra'\]"):
        LogitScale.from_pretrained(other)
    assert float(LogitScale.from_pretrained(other, strict=False)().detach()) == 1.0


def test_hub_ids_download_and_push_through_huggingface_hub(tmp_path, monkeypatch):
    import huggingface_hub

    head = COSMOSHead(8, image_token_dim=4, text_token_dim=6, num_heads=2)
    local = head.save_pretrained(tmp_path / "local")
    calls: list[dict] = []

    def fake_download(*, repo_id, filename, **kwargs):
        calls.append({"repo_id": repo_id, "filename": filename, **kwargs})
        cached = tmp_path / "cache" / repo_id
        cached.mkdir(parents=True, exist_ok=True)
        shutil.copy(local / filename, cached / filename)
        return str(cached / filename)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", fake_download)
    loaded = COSMOSHead.from_pretrained("someone/cosmos-head", revision="v1")
    _same_state(head, loaded)
    assert [c["filename"] for c in calls] == ["config.json", "model.safetensors"]
    assert all(c["repo_id"] == "someone/cosmos-head" and c["revision"] == "v1" for c in calls)
    assert all(c["library_name"] == "vlp" for c in calls)

    uploaded: dict = {}

    class FakeApi:
        def __init__(self, token=None):
            uploaded["token"] = token

        def create_repo(self, repo_id, private=None, exist_ok=False):
            uploaded["created"] = (repo_id, private, exist_ok)

        def upload_folder(self, *, repo_id, folder_path, revision, commit_message):
            uploaded["files"] = sorted(p.name for p in Path(folder_path).iterdir())
            uploaded["config"] = json.loads((Path(folder_path) / "config.json").read_text())
            return "commit"

    monkeypatch.setattr(huggingface_hub, "HfApi", FakeApi)
    assert head.push_to_hub("someone/cosmos-head", token="t", private=True) == "commit"
    assert uploaded["created"] == ("someone/cosmos-head", True, True)
    assert uploaded["files"] == ["config.json", "model.safetensors"]
    assert uploaded["config"] == head.hub_config and uploaded["token"] == "t"


def test_import_and_local_round_trip_do_not_import_huggingface_hub(tmp_path):
    code = (
        "import sys, tempfile\n"
        "import vlp, vlp.heads, vlp.models\n"
        "from vlp.heads import CrossAttentionPooler\n"
        "from vlp.losses import LogitScale\n"
        "d = tempfile.mkdtemp()\n"
        "CrossAttentionPooler(8, 2).save_pretrained(d)\n"
        "CrossAttentionPooler.from_pretrained(d)\n"
        "LogitScale.from_pretrained(LogitScale().save_pretrained(d + '/s'))\n"
        "assert 'huggingface_hub' not in sys.modules, 'imported'\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr
