"""CLIPAG's released checkpoint is a training checkpoint: ``state_dict`` + ``module.`` keys, loaded strictly."""
import json
import os

import pytest
import torch

from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.fixtures import clipag as clipag_fixture
from fusedream_pack.fusedream_ops.fixtures.biggan_clip import TINY_CLIP_CONFIG, tiny_clip
from fusedream_pack.fusedream_ops.fixtures.clipag import save_training_checkpoint
from fusedream_pack.fusedream_ops.models.clip import load_clip, matching_architectures


def _same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_training_checkpoint_with_module_prefixes_loads_strictly(tmp_path):
    model = tiny_clip(seed=4)
    path = save_training_checkpoint(model, str(tmp_path / "CLIPAG_tiny.pt"), TINY_CLIP_CONFIG)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"epoch", "state_dict"} and all(k.startswith("module.") for k in raw["state_dict"])
    scorer = load_clip("auto", path)
    assert _same_weights(scorer.model, model)
    assert not any(p.requires_grad for p in scorer.model.parameters())


def test_a_truncated_training_checkpoint_names_the_missing_tensor(tmp_path):
    model = tiny_clip(seed=4)
    path = save_training_checkpoint(model, str(tmp_path / "cut.pt"), TINY_CLIP_CONFIG)
    raw = torch.load(path, weights_only=True)
    del raw["state_dict"]["module.visual.proj"]
    torch.save(raw, path)
    with pytest.raises(FuseDreamError, match=r"1 missing \(visual\.proj\)"):
        load_clip("auto", path)


def test_a_wrong_architecture_fails_naming_shapes_and_what_would_fit(tmp_path):
    path = save_training_checkpoint(tiny_clip(seed=4), str(tmp_path / "tiny.pt"), TINY_CLIP_CONFIG)
    with pytest.raises(FuseDreamError) as error:
        load_clip("ViT-B-32", path)
    message = str(error.value)
    assert "for architecture 'ViT-B-32' does not match" in message and "with another shape" in message
    assert "choose architecture 'auto'" in message
    os.remove(os.path.splitext(path)[0] + ".json")
    with pytest.raises(FuseDreamError, match="'auto' found no sidecar .json and no built-in open_clip architecture"):
        load_clip("auto", path)


def test_a_sidecar_for_another_size_fails_clearly(tmp_path):
    path = save_training_checkpoint(tiny_clip(seed=4), str(tmp_path / "tiny.pt"))
    wider = json.loads(json.dumps(TINY_CLIP_CONFIG))
    wider["vision_cfg"]["width"] = 128
    (tmp_path / "tiny.json").write_text(json.dumps({"model_cfg": wider}))
    with pytest.raises(FuseDreamError, match=r"tiny\.json' does not match its checkpoint: vision_cfg\.width is 128 but "
                                             r"the checkpoint has 64 \(visual\.conv1\.weight \(64, 3, 8, 8\)\)"):
        load_clip("auto", path)


def test_clipag_vit_b_32_shapes_match_gelu_first_and_quickgelu_second():
    import open_clip

    with torch.device("meta"):
        shapes = open_clip.CLIP(**open_clip.get_model_config("ViT-B-32")).state_dict()
    assert matching_architectures(shapes)[:2] == ["ViT-B-32", "ViT-B-32-quickgelu"]


def test_a_quickgelu_config_builds_quickgelu_activations(tmp_path):
    cfg = {**TINY_CLIP_CONFIG, "quick_gelu": True}
    path = save_training_checkpoint(tiny_clip(seed=4), str(tmp_path / "quick.pt"), cfg)
    mlp = load_clip("auto", path).model.visual.transformer.resblocks[0].mlp
    x = torch.linspace(-4, 4, 101)
    assert torch.allclose(mlp.gelu(x), x * torch.sigmoid(1.702 * x)), "QuickGELU, not GELU"
    assert not torch.allclose(torch.nn.GELU()(x), x * torch.sigmoid(1.702 * x), atol=1e-3)


def test_fixture_command_writes_a_clipag_stand_in_the_loader_accepts(tmp_path):
    written = clipag_fixture.write(str(tmp_path))
    assert written == [str(tmp_path / "open_clip" / "CLIPAG_ViTB32.pt")]
    assert load_clip("auto", written[0]).image_size == (32, 32)
    with pytest.raises(FuseDreamError, match="already exists"):
        clipag_fixture.write(str(tmp_path))
