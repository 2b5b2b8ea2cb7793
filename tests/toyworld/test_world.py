"""The toy world itself: scenes and captions from a seed, the generator's checkpoint form, the rebuild command."""
import json

import torch

from fusedream_pack.fusedream_ops.models.biggan import load_biggan, save_biggan
from fusedream_pack.fusedream_ops.models.clip import load_clip
from fusedream_pack.fusedream_ops.toyworld import build, world
from fusedream_pack.fusedream_ops.toyworld.train_generator import (build_generator, plain_weights, target_images,
                                                                   to_spectral_norm_checkpoint, z_to_params)


def test_same_seed_same_scenes_other_seed_other_scenes():
    a, b, c = world.sample_scenes(32, 5, 0.3), world.sample_scenes(32, 5, 0.3), world.sample_scenes(32, 6, 0.3)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    assert not torch.equal(a.images, c.images)
    assert a.images.shape == (32, 3, 32, 32) and 0 <= a.images.min() and a.images.max() <= 1


def test_captions_name_colour_shape_and_cell_of_every_object():
    labels = torch.zeros(9, dtype=torch.long)
    labels[3] = world.CLASS_NAMES.index("red circle") + 1
    labels[5] = world.CLASS_NAMES.index("blue square") + 1
    assert world.caption_for(labels) == "a red circle on the left and a blue square on the right"
    single = torch.zeros(9, dtype=torch.long)
    single[0] = world.CLASS_NAMES.index("yellow cross") + 1
    assert world.caption_for(single, positioned=False) == "a yellow cross"


def test_two_object_scenes_put_objects_in_opposite_cells():
    scenes = world.sample_scenes(500, 1, two_object_fraction=1.0)
    assert ((scenes.labels > 0).sum(-1) == 2).all()
    for labels in scenes.labels[:100]:
        a, b = (labels > 0).nonzero().flatten().tolist()
        assert max(abs(a // 3 - b // 3), abs(a % 3 - b % 3)) == 2


def test_object_is_painted_in_its_colour_inside_its_cell_only():
    scenes = world.sample_scenes(50, 2)
    for image, labels in zip(scenes.images, scenes.labels):
        cell = int(labels.nonzero()[0])
        colour = world.COLOUR_RGB[(int(labels[cell]) - 1) % 4].view(3, 1, 1)
        painted = ((image - colour).abs().max(0).values < 0.02).nonzero().float()
        assert len(painted) >= 4
        assert (world.cell_of(painted[:, 1].mean() + 0.5, painted[:, 0].mean() + 0.5) == cell).all()


def test_unpositioned_caption_matches_its_object_anywhere_but_positioned_only_its_cell():
    scenes = world.sample_scenes(64, 3)
    caption = scenes.labels[:1].clone()
    match_positioned = world.scene_matches(caption, torch.tensor([True]), scenes.labels)[0]
    match_anywhere = world.scene_matches(caption, torch.tensor([False]), scenes.labels)[0]
    same_class = scenes.labels.max(-1).values == caption.max()
    assert torch.equal(match_anywhere, same_class)
    assert torch.equal(match_positioned, (scenes.labels == caption).all(-1))
    assert match_positioned.sum() <= match_anywhere.sum()


def test_plain_weight_generator_round_trips_exactly_through_the_biggan_format(tmp_path):
    trained = build_generator()
    plain_weights(trained)
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in trained.parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    trained.eval()
    save_biggan(to_spectral_norm_checkpoint(trained), str(tmp_path / "gen"), list(world.CLASS_NAMES))
    loaded = load_biggan(str(tmp_path / "gen"))
    z = torch.randn(3, loaded.z_dim, generator=g)
    classes = torch.tensor([0, 5, 15])
    with torch.no_grad():
        expected = (trained(z, torch.nn.functional.one_hot(classes, 16).float(), 1.0) + 1) / 2
        assert torch.allclose(loaded(z, loaded.class_embedding(classes)), expected, atol=1e-5)
    assert loaded.class_names[5] == "green square"


def test_generator_target_covers_the_whole_image_over_the_latent_box():
    z = torch.zeros(2, 16)
    z[0, :2], z[1, :2] = -2.0, 2.0
    params = z_to_params(z)
    assert torch.allclose(params[0, :2], torch.zeros(2)) and torch.allclose(params[1, :2], torch.ones(2))
    images = target_images(torch.tensor([0, 0]), z)
    red = (images[:, 0] > 0.8) & (images[:, 1] < 0.3)
    assert red[0, :8, :8].any() and not red[0, 24:, 24:].any()
    assert red[1, 24:, 24:].any() and not red[1, :8, :8].any()


def test_smoke_build_writes_fixtures_the_pack_loaders_read(tmp_path):
    report = build.build(str(tmp_path), smoke=True, log=lambda s: None)
    scorer = load_clip("auto", str(tmp_path / build.CLIP_PATH))
    generator = load_biggan(str(tmp_path / build.BIGGAN_PATH))
    judge = build.load_judge(str(tmp_path / build.JUDGE_PATH))
    assert scorer.image_size == (32, 32) and generator.resolution == 32 and generator.num_classes == 16
    assert judge.read(world.sample_scenes(2, 0).images).shape == (2, 9)
    saved = json.loads((tmp_path / build.REPORT_PATH).read_text())
    assert saved["smoke"] is True and saved["judge_accuracy_world"] == report["judge_accuracy_world"]


def test_training_is_deterministic():
    from fusedream_pack.fusedream_ops.toyworld.judge import train_judge
    from fusedream_pack.fusedream_ops.toyworld.train_clip import train_clip

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        a, b = train_judge(steps=2, batch=16), train_judge(steps=2, batch=16)
        c, d = train_clip(steps=2, batch=16), train_clip(steps=2, batch=16)
    finally:
        torch.set_num_threads(threads)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert all(torch.equal(x, y) for x, y in zip(c.state_dict().values(), d.state_dict().values()))


def test_judge_checkpoint_missing_a_tensor_is_an_error_naming_it(tmp_path):
    import pytest
    from safetensors.torch import save_file

    from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
    from fusedream_pack.fusedream_ops.toyworld.judge import Judge

    state = Judge().state_dict()
    del state["head.3.bias"]
    save_file(state, str(tmp_path / "judge.safetensors"))
    with pytest.raises(FuseDreamError, match=r"head\.3\.bias"):
        build.load_judge(str(tmp_path / "judge.safetensors"))
