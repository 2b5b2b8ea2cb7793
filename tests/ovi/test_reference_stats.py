"""Reference statistics for OVI's constraints: shrinkage covariance, nearest neighbours, safetensors round trip."""
import os

import pytest
import torch
from PIL import Image

from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.ovi.reference_stats import (build_reference_stats, embed_image_files, image_files,
                                                              ledoit_wolf_shrinkage, load_reference_stats,
                                                              save_reference_stats)
from testkit import kandinsky_models as km


def test_few_images_give_an_invertible_covariance_with_automatic_shrinkage():
    embeds = torch.randn(5, 32) * 3 + 1
    stats = build_reference_stats(embeds)
    assert 0 < stats.shrinkage <= 1
    assert torch.linalg.eigvalsh(stats.covariance.double()).min() > 0
    assert torch.allclose(stats.mean, embeds.mean(0), atol=1e-6)
    assert torch.allclose(stats.precision @ stats.covariance, torch.eye(32), atol=1e-3)


def test_ledoit_wolf_shrinks_little_with_many_samples_and_much_with_few():
    g = torch.Generator().manual_seed(0)
    scales = torch.linspace(0.5, 3, 16)
    many = ledoit_wolf_shrinkage(torch.randn(4000, 16, generator=g) * scales)
    few = ledoit_wolf_shrinkage(torch.randn(6, 16, generator=g) * scales)
    assert many < 0.05 < few


def test_fixed_shrinkage_is_used_as_given():
    stats = build_reference_stats(torch.randn(8, 4), shrinkage=0.3)
    assert stats.shrinkage == pytest.approx(0.3)


def test_mahalanobis_of_the_mean_is_zero_and_grows_away_from_it():
    stats = build_reference_stats(torch.randn(50, 8))
    far = stats.mean + 5 * torch.randn(8)
    distances = stats.mahalanobis(torch.stack([stats.mean, far]))
    assert distances[0] < 1e-4 < 1 < distances[1]


def test_nearest_cosine_finds_the_closest_reference():
    bank = torch.eye(4) * 3
    stats = build_reference_stats(bank, shrinkage=0.5)
    query = torch.tensor([[0.1, 2.0, 0.0, 0.0]])
    expected = torch.nn.functional.cosine_similarity(query, bank[1:2]).item()
    assert stats.nearest_cosine(query).item() == pytest.approx(expected, abs=1e-6)


def test_save_and_load_round_trip(tmp_path):
    stats = build_reference_stats(torch.randn(6, 8))
    path = save_reference_stats(stats, str(tmp_path / "ref.safetensors"), source="/photos")
    loaded = load_reference_stats(path)
    assert torch.equal(loaded.mean, stats.mean) and torch.equal(loaded.covariance, stats.covariance)
    assert torch.equal(loaded.bank, stats.bank) and loaded.shrinkage == pytest.approx(stats.shrinkage)
    assert os.listdir(tmp_path) == ["ref.safetensors"]


def test_saving_the_same_statistics_writes_the_same_bytes(tmp_path):
    """The committed fixtures are rebuilt byte for byte; safetensors' own writer orders four metadata entries
    differently on almost every call (8 saves gave 8 different files), so this fails without the sorted writer."""
    stats = build_reference_stats(torch.randn(6, 8))
    files = set()
    for i in range(6):
        path = save_reference_stats(stats, str(tmp_path / f"ref{i}.safetensors"), source="cats")
        with open(path, "rb") as f:
            files.add(f.read())
    assert len(files) == 1


def test_a_foreign_safetensors_file_is_refused(tmp_path):
    from safetensors.torch import save_file

    path = str(tmp_path / "other.safetensors")
    save_file({"weight": torch.zeros(3)}, path)
    with pytest.raises(FuseDreamError, match="not an OVI reference statistics file"):
        load_reference_stats(path)


def test_a_corrupt_file_is_a_clear_error(tmp_path):
    path = tmp_path / "broken.safetensors"
    path.write_bytes(b"\x10\x00garbage")
    with pytest.raises(FuseDreamError, match="could not read reference statistics"):
        load_reference_stats(str(path))


def test_one_image_or_identical_images_are_refused():
    with pytest.raises(FuseDreamError, match="at least 2 images"):
        build_reference_stats(torch.randn(1, 8))
    with pytest.raises(FuseDreamError, match="same embedding"):
        build_reference_stats(torch.ones(3, 8))


def test_empty_or_missing_folder_is_a_clear_error(tmp_path):
    (tmp_path / "notes.txt").write_text("no images here")
    with pytest.raises(FuseDreamError, match="holds no images"):
        image_files(str(tmp_path))
    with pytest.raises(FuseDreamError, match="does not exist"):
        image_files(str(tmp_path / "missing"))


def test_folder_images_are_encoded_in_batches_like_the_same_images_in_memory(tmp_path):
    enc = km.encoders()
    g = torch.Generator().manual_seed(1)
    for i, size in enumerate([(40, 30), (32, 32), (64, 48)]):
        arr = (torch.rand(size[1], size[0], 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(tmp_path / f"img{i}.png")
    files = image_files(str(tmp_path))
    steps = []
    embeds = embed_image_files(files, enc.encode_images, batch_size=2, on_step=steps.append)
    assert embeds.shape == (3, 32) and [s.step for s in steps] == [1, 2]
    from fusedream_pack.fusedream_ops.core.images import from_pil

    with Image.open(files[2]) as img:
        single = enc.encode_images(from_pil(img))
    assert torch.allclose(embeds[2:], single, atol=1e-5)


def test_unreadable_image_is_named(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(FuseDreamError, match="bad.png"):
        embed_image_files(image_files(str(tmp_path)), km.encoders().encode_images)
