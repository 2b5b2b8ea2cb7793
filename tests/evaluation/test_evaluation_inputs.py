"""What the evaluation reads from users: manifests, run images and reference folders, each bad one a [FuseDream] error
naming the file (and manifest line), or skipped with a logged reason; image bombs refused from their header."""
import json
import logging
import os

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from fusedream_pack.fusedream_ops.core.errors import FuseDreamError
from fusedream_pack.fusedream_ops.evaluation import EvaluationSettings, evaluate_runs, reference
from fusedream_pack.fusedream_ops.evaluation.extract import MAX_PIXELS, load_image
from fusedream_pack.fusedream_ops.evaluation.manifest import read_run
from fusedream_pack.fusedream_ops.safety.image_files import MAX_IMAGE_PIXELS, check_image


def _row(key: str, image: str | None = None, **extra) -> dict:
    return dict({"key": key, "id": key, "prompt": f"prompt {key}", "seed": 0, "method": "naive", "status": "ok",
                 "image": f"images/{key}.png" if image is None else image}, **extra)


def _run(folder, rows: list, images: int = 2) -> str:
    """A batch output folder: ``images`` small PNGs in images/ and a manifest of ``rows`` (dicts or raw lines)."""
    os.makedirs(folder / "images", exist_ok=True)
    for i in range(images):
        Image.new("RGB", (8, 8), (40 * i, 90, 200)).save(folder / "images" / f"{i}.png")
    lines = [r if isinstance(r, str) else json.dumps(r) for r in rows]
    (folder / "manifest.jsonl").write_text("".join(line + "\n" for line in lines))
    return str(folder)


def _evaluate(run: str) -> dict:
    """``evaluate_runs`` with a judge file that does not exist: any other error came before loading a network."""
    return evaluate_runs([run], EvaluationSettings("toyworld", os.path.join(run, "no-judge.safetensors")))


def _bomb(path) -> None:
    """A ~20 kB PNG declaring 12000 × 12000 pixels (1 bit each): 432 MB once decoded as RGB."""
    Image.new("1", (12000, 12000)).save(path)


@pytest.fixture
def no_decoding(monkeypatch):
    """Fails the test if any image is decoded (PIL's ``ImageFile.load`` reads the pixels; ``open`` only the header)."""
    from PIL import ImageFile

    def refuse(self):
        raise AssertionError(f"decoded {self.size} pixels")

    monkeypatch.setattr(ImageFile.ImageFile, "load", refuse)


def test_a_valid_run_gives_its_ok_rows_with_paths_inside_the_folder(tmp_path):
    run = _run(tmp_path, [_row("0"), {"key": "x", "status": "failed", "error": "NaN"}, _row("1")])
    images = read_run(run)
    assert [r["key"] for r in images.rows] == ["0", "1"]
    assert all(os.path.isfile(r["path"]) and r["path"].startswith(str(tmp_path)) for r in images.rows)
    assert read_run(os.path.join(run, "manifest.jsonl")).rows == images.rows


@pytest.mark.parametrize("image", ["../outside.png", "images/../../outside.png", "ABSOLUTE", "images/link.png"])
def test_manifest_image_paths_that_leave_the_run_folder_are_refused_naming_the_line(tmp_path, image):
    """Checked: without the inside-the-folder check the rows were accepted (the error named the missing judge)."""
    Image.new("RGB", (8, 8)).save(tmp_path / "outside.png")
    folder = tmp_path / "run"
    os.makedirs(folder / "images")
    os.symlink(tmp_path / "outside.png", folder / "images" / "link.png")
    image = str(tmp_path / "outside.png") if image == "ABSOLUTE" else image
    run = _run(folder, [_row("0"), _row("1"), _row("2", image)])
    with pytest.raises(FuseDreamError, match=r"manifest.jsonl line 3 names image .* outside the run folder"):
        _evaluate(run)


@pytest.mark.parametrize("line, says", [
    ('{"key": "1", "status": "ok", "image": "images/1.p', r"line 2 is not a JSON object \(.*truncated"),
    ('["ok", "images/1.png"]', "line 2 is not a JSON object"),
    (json.dumps({k: v for k, v in _row("1").items() if k != "status"}), "line 2 has status 'missing'"),
    (json.dumps(_row("1", status="done")), "line 2 has status 'done'"),
    (json.dumps({k: v for k, v in _row("1").items() if k != "prompt"}), "line 2 is an ok row without 'prompt'"),
    (json.dumps(_row("9")), "line 2 names image 'images/9.png', which does not exist"),
])
def test_a_broken_manifest_row_is_an_error_naming_the_file_and_line(tmp_path, line, says):
    """Checked: with the batch command's ``read_manifest`` again, JSONDecodeError/KeyError tracebacks or an error
    about the judge (rows passed unchecked)."""
    run = _run(tmp_path, [_row("0"), line])
    with pytest.raises(FuseDreamError, match=says) as info:
        _evaluate(run)
    assert str(info.value).startswith("[FuseDream]") and "manifest.jsonl" in str(info.value)


def test_a_non_image_or_a_truncated_image_in_the_run_is_an_error_naming_it(tmp_path):
    """Checked: without the header check the run passed (the error named the judge); without the reader's error
    wrapping, decoding raised a bare OSError."""
    run = _run(tmp_path, [_row("0"), _row("1")])
    (tmp_path / "images" / "1.png").write_text("not an image")
    with pytest.raises(FuseDreamError, match=r"line 2: image 'images/1.png' is not a readable image"):
        _evaluate(run)
    noise = Image.frombytes("RGB", (32, 32), bytes(range(256)) * 12)
    noise.save(tmp_path / "images" / "1.png")
    png = (tmp_path / "images" / "1.png").read_bytes()
    (tmp_path / "images" / "1.png").write_bytes(png[:len(png) // 2])  # header intact, pixel data cut off
    assert len(read_run(run).rows) == 2  # the header check passes ...
    with pytest.raises(FuseDreamError, match=r"image '.*1.png' is not a readable image"):
        load_image(str(tmp_path / "images" / "1.png"))  # ... decoding names the file


def test_an_image_bomb_is_refused_from_its_header_without_decoding(tmp_path, no_decoding):
    """Checked: with the pixel-count check removed, the spy caught PIL decoding the 144 MP image."""
    _bomb(tmp_path / "bomb.png")
    assert os.path.getsize(tmp_path / "bomb.png") < 100_000
    with pytest.raises(FuseDreamError, match=r"image '.*bomb.png' declares 12000×12000 pixels"):
        load_image(str(tmp_path / "bomb.png"))
    with pytest.raises(FuseDreamError, match="image 'bomb.png' declares 12000×12000 pixels"):
        load_image(("bomb.png", (tmp_path / "bomb.png").read_bytes()))  # as sent to Ray workers
    run = _run(tmp_path / "run", [_row("0"), _row("1", "images/bomb.png")])
    _bomb(tmp_path / "run" / "images" / "bomb.png")
    with pytest.raises(FuseDreamError, match="line 2: image 'images/bomb.png' declares 12000×12000"):
        _evaluate(run)


def test_the_evaluation_reads_images_up_to_4096_squared_below_the_packs_general_bound(tmp_path, no_decoding):
    """The evaluation decodes every image whole, so it keeps its own bound (4096², 16.8 MP), not the 50 MP of readers
    that shrink. Checked: with ``max_pixels`` removed from the manifest's, load_image's or the reference folder's
    reader, the 4097×4096 image passed."""
    assert MAX_PIXELS == 4096 * 4096 < 4097 * 4096 < MAX_IMAGE_PIXELS
    run = _run(tmp_path, [_row("0"), _row("1", "images/wide.png")])
    Image.new("1", (4096, 4096)).save(tmp_path / "images" / "wide.png")
    assert len(read_run(run).rows) == 2  # exactly at the bound: read
    Image.new("1", (4097, 4096)).save(tmp_path / "images" / "wide.png")
    limit = r"images are read up to 16,777,216 pixels \(16.8 megapixels\)"
    with pytest.raises(FuseDreamError, match=rf"line 2: image 'images/wide.png' declares 4097×4096 .*; {limit}"):
        read_run(run)
    with pytest.raises(FuseDreamError, match=rf"wide.png' declares 4097×4096 .*; {limit}"):
        load_image(str(tmp_path / "images" / "wide.png"))
    with pytest.raises(FuseDreamError, match=rf"reference image '.*wide.png' declares 4097×4096 .*; {limit}"):
        reference.reference_statistics(str(tmp_path / "images"), "toyworld", str(tmp_path / "images" / "0.png"),
                                       str(tmp_path / "cache"), lambda paths: torch.zeros(len(paths), 4))


def test_run_errors_come_before_any_network_is_loaded(tmp_path):
    """A bomb in the run is reported, not the missing judge file the network would need (the other tests here rely
    on the same order). Checked: with ``FeatureWorker`` built before the manifest is read, the error named the judge."""
    run = _run(tmp_path, [_row("0"), _row("1", "images/bomb.png")])
    _bomb(tmp_path / "images" / "bomb.png")
    with pytest.raises(FuseDreamError, match="declares 12000×12000"):
        _evaluate(run)
    os.remove(tmp_path / "images" / "bomb.png")
    Image.new("RGB", (8, 8)).save(tmp_path / "images" / "bomb.png")
    with pytest.raises(FuseDreamError, match="no-judge.safetensors' does not exist"):
        _evaluate(run)  # a good run gets as far as the network


def test_the_reference_folder_skips_non_images_with_a_log_and_refuses_unreadable_images_before_features(
        tmp_path, caplog):
    """Checked: before, a ``.png`` that is text or a bomb reached the feature extraction (an OSError traceback, or
    a 432 MB decode), and other files were dropped without a word."""
    folder = tmp_path / "real"
    folder.mkdir()
    for i in range(3):
        Image.new("RGB", (8, 8), (60 * i, 0, 0)).save(folder / f"{i}.png")
    (folder / "captions.json").write_text("{}")
    calls = []

    def feats(paths):
        calls.append(len(paths))
        return torch.randn(len(paths), 4)

    with caplog.at_level(logging.WARNING, logger="FuseDream"):
        state, _, _ = reference.reference_statistics(str(folder), "toyworld", str(folder / "0.png"),
                                                     str(tmp_path / "cache"), feats)
    assert int(state["count"]) == 3 and calls == [3]
    assert "skipped 1 file(s) that are not images" in caplog.text and "captions.json" in caplog.text
    (folder / "3.png").write_text("not an image")
    with pytest.raises(FuseDreamError, match=r"reference image '.*3.png' is not a readable image"):
        reference.reference_statistics(str(folder), "toyworld", str(folder / "0.png"), str(tmp_path / "cache"), feats)
    os.remove(folder / "3.png")
    _bomb(folder / "3.png")
    with pytest.raises(FuseDreamError, match=r"reference image '.*3.png' declares 12000×12000"):
        reference.reference_statistics(str(folder), "toyworld", str(folder / "0.png"), str(tmp_path / "cache"), feats)
    assert calls == [3]  # no features computed for a folder with a bad image


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=300))
def test_any_bytes_read_as_an_image_give_pixels_or_a_fusedream_error(data):
    png_header = b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR"
    for blob in (data, png_header + data):
        try:
            check_image(blob, name="fuzz")  # the manifest's header-only check, on the same bytes
            pixels = load_image(("fuzz", blob))
        except FuseDreamError as exc:
            assert "image 'fuzz'" in str(exc)
        else:
            assert pixels.dtype == torch.uint8 and pixels.ndim == 4 and pixels.shape[1] == 3


_values = st.one_of(st.none(), st.booleans(), st.integers(), st.text(max_size=12),
                    st.sampled_from(["ok", "failed", "images/0.png", "../x.png", "/etc/passwd", ""]))
_rows = st.dictionaries(st.sampled_from(["status", "image", "prompt", "method", "key"]), _values, max_size=5)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.one_of(_rows.map(json.dumps), st.text(max_size=40).filter(lambda t: "\n" not in t
                                                                                 and "\r" not in t)),
                max_size=4))
def test_any_manifest_reads_as_checked_rows_or_a_fusedream_error(tmp_path_factory, lines):
    run = _run(tmp_path_factory.mktemp("run"), lines, images=1)
    try:
        rows = read_run(run).rows
    except FuseDreamError as exc:
        assert "manifest.jsonl" in str(exc)
    else:
        assert all(os.path.realpath(r["path"]) == os.path.realpath(os.path.join(run, "images", "0.png"))
                   for r in rows)
