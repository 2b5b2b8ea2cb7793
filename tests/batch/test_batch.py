"""The batch run on tiny random models: prompt files, seeds, PNG metadata, manifest, failures, resuming."""
import json
import os

import pytest
from PIL import Image

from fusedream_pack.fusedream_ops.batch import MethodSpec, PromptItem, plan_jobs, read_manifest, read_prompts, run_batch
from fusedream_pack.fusedream_ops.batch.jobs import derive_seed, file_key
from fusedream_pack.fusedream_ops.batch.methods import check_spec
from fusedream_pack.fusedream_ops.core.errors import FuseDreamError


def _biggan_clip(models):
    return {"biggan": os.path.join(models, "biggan", "biggan-deep-256"),
            "clip": os.path.join(models, "open_clip", "ViT-B-32.safetensors")}


def naive_spec(models, steps=2):
    return MethodSpec("naive", {"steps": steps}, _biggan_clip(models))


def test_prompt_files_as_text_jsonl_and_csv_give_ids_prompts_and_seeds(tmp_path):
    (tmp_path / "p.txt").write_text("a red bus\n\n  a blue dog  \n")
    (tmp_path / "p.jsonl").write_text('{"id": "x1", "prompt": "a red bus", "seed": 7}\n\n{"prompt": "a cat"}\n')
    (tmp_path / "p.csv").write_text("id,prompt,seed\nc1,a red bus,\nc2,\"a dog, running\",3\n")
    assert read_prompts(str(tmp_path / "p.txt")) == [PromptItem("00001", "a red bus"), PromptItem("00002", "a blue dog")]
    assert read_prompts(str(tmp_path / "p.jsonl")) == [PromptItem("x1", "a red bus", 7), PromptItem("00002", "a cat")]
    assert read_prompts(str(tmp_path / "p.csv")) == [PromptItem("c1", "a red bus"), PromptItem("c2", "a dog, running", 3)]


@pytest.mark.parametrize("name, text, words", [
    ("dup.jsonl", '{"id": "a", "prompt": "x"}\n{"id": "a", "prompt": "y"}\n', "used twice"),
    ("nocol.csv", "id,text\n1,a bus\n", "'prompt' column"),
    ("seed.jsonl", '{"prompt": "x", "seed": "three"}\n', "seed must be an integer"),
    ("empty.txt", "\n\n", "holds no prompt"),
])
def test_bad_prompt_files_are_refused_by_name(tmp_path, name, text, words):
    (tmp_path / name).write_text(text)
    with pytest.raises(FuseDreamError, match=words):
        read_prompts(str(tmp_path / name))


def test_seeds_depend_only_on_run_seed_prompt_id_and_image_index():
    items = [PromptItem("a", "x"), PromptItem("b", "y"), PromptItem("c", "z", seed=40)]
    jobs = {j.key: j.seed for j in plan_jobs(items, run_seed=5, images_per_prompt=2)}
    reordered = {j.key: j.seed for j in plan_jobs(items[::-1], run_seed=5, images_per_prompt=2)}
    assert jobs == reordered
    assert jobs["a__0"] == derive_seed(5, "a", 0) != derive_seed(6, "a", 0)
    assert jobs["a__0"] != jobs["a__1"] and jobs["a__0"] != jobs["b__0"]
    assert (jobs["c__0"], jobs["c__1"]) == (40, 41)


def test_file_keys_are_safe_and_distinct_for_ids_that_sanitise_alike():
    assert file_key("coco_123") == "coco_123"
    assert file_key("a/b") != file_key("a:b")
    assert "/" not in file_key("../../etc/passwd") and not file_key("../x").startswith(".")


def test_unknown_setting_fixed_setting_and_missing_model_are_refused_before_loading(tiny_models):
    models = _biggan_clip(tiny_models)
    with pytest.raises(FuseDreamError, match="does not apply"):
        check_spec(MethodSpec("fusedream", {"stepz": 3}, models))
    with pytest.raises(FuseDreamError, match="fixed to 1"):
        check_spec(MethodSpec("augclip", {"candidates": 8}, models))
    with pytest.raises(FuseDreamError, match="needs the biggan model"):
        check_spec(MethodSpec("naive", {}, {"clip": models["clip"], "biggan": "/nowhere"}))
    with pytest.raises(FuseDreamError, match="method must be one of"):
        check_spec(MethodSpec("dalle", {}, models))


def test_embedded_run_writes_one_png_per_prompt_and_seed_with_its_record_and_a_manifest(tiny_models, tmp_path):
    items = [PromptItem("p1", "a red bus"), PromptItem("p2", "a blue dog")]
    summary = run_batch(items, str(tmp_path / "run"), naive_spec(tiny_models), run_seed=3, images_per_prompt=2,
                        progress=False)
    assert (summary.total, summary.ok, summary.failed, summary.made_now) == (4, 4, 0, 4)
    rows = read_manifest(str(tmp_path / "run"))
    assert [r["key"] for r in rows] == ["p1__0", "p1__1", "p2__0", "p2__1"]
    for row in rows:
        assert row["status"] == "ok" and row["method"] == "naive" and row["device"] == "cpu"
        assert set(row) >= {"id", "prompt", "seed", "scores", "time", "worker", "sha256"}
        assert row["seed"] == derive_seed(3, row["id"], row["index"])
        with Image.open(tmp_path / "run" / row["image"]) as img:
            meta = json.loads(img.text["fusedream"])
            assert img.text["prompt"] == row["prompt"]
        assert meta["seed"] == row["seed"] and meta["method"] == "naive" and meta["settings"]["steps"] == 2
        assert (meta["settings"]["copies"], meta["settings"]["latent_noise"], meta["settings"]["augment"]) == (1, 0, False)
        assert (meta["settings"]["candidates"], meta["settings"]["k"]) == (1, 1)
        assert meta["scores"] == row["scores"] and "clip" in meta["scores"]
    assert not [n for n in os.listdir(tmp_path / "run" / "images") if n.startswith(".tmp-")]


def test_restart_skips_finished_images_and_refuses_other_settings(tiny_models, tmp_path):
    items = [PromptItem("p1", "a red bus")]
    out = str(tmp_path / "run")
    run_batch(items, out, naive_spec(tiny_models), progress=False)
    before = read_manifest(out)
    again = run_batch(items + [PromptItem("p2", "a cat")], out, naive_spec(tiny_models), progress=False)
    assert again.made_now == 1 and again.ok == 2
    assert read_manifest(out)[0] == before[0]
    with pytest.raises(FuseDreamError, match="other settings"):
        run_batch(items, out, naive_spec(tiny_models, steps=3), progress=False)


def test_a_failing_prompt_is_recorded_with_its_error_retried_up_to_attempts_and_the_rest_finish(tiny_models,
                                                                                                  tmp_path):
    items = [PromptItem("good", "a red bus"), PromptItem("bad", ":0.5"), PromptItem("good2", "a cat")]
    out = str(tmp_path / "run")
    summary = run_batch(items, out, naive_spec(tiny_models), attempts=2, progress=False)
    assert (summary.ok, summary.failed) == (2, 1)
    bad = {r["id"]: r for r in read_manifest(out)}["bad"]
    assert bad["status"] == "failed" and bad["attempts"] == 2 and bad["image"] is None
    assert "FuseDreamError" in bad["error"] and "weight but no text" in bad["error"]
    assert run_batch(items, out, naive_spec(tiny_models), attempts=2, progress=False).made_now == 0
    assert {r["id"]: r for r in read_manifest(out)}["bad"]["attempts"] == 2
    run_batch(items, out, naive_spec(tiny_models), attempts=3, progress=False)
    assert {r["id"]: r for r in read_manifest(out)}["bad"]["attempts"] == 3


@pytest.mark.parametrize("method, settings", [
    ("fusedream", {"candidates": 4, "k": 2, "steps": 2, "copies": 2}),
    ("augclip", {"steps": 2, "copies": 2}),
    ("clipag-pixels", {"steps": 2, "views": 2, "patches": 2, "size": 32}),
])
def test_every_generator_method_makes_an_image_with_its_score(tiny_models, tmp_path, method, settings):
    models = _biggan_clip(tiny_models)
    if method == "clipag-pixels":
        models.pop("biggan")
    summary = run_batch([PromptItem("p", "a red bus")], str(tmp_path / method), MethodSpec(method, settings, models),
                        progress=False)
    (row,) = read_manifest(summary.manifest)
    assert row["status"] == "ok", row["error"]
    assert ("augclip" if method in ("fusedream", "augclip") else "clip") in row["scores"]


@pytest.mark.parametrize("method", ["ovi", "textemb"])
def test_kandinsky_methods_make_an_image_with_the_prior_and_decoder(tiny_models, tmp_path, method):
    base = os.path.join(tiny_models, "kandinsky22")
    settings = {"decoder_steps": 2, "width": 64, "height": 64}
    if method == "ovi":
        settings["steps"] = 2
    spec = MethodSpec(method, settings, {"prior": os.path.join(base, "kandinsky-2-2-prior"),
                                         "decoder": os.path.join(base, "kandinsky-2-2-decoder")})
    summary = run_batch([PromptItem("p", "a red bus")], str(tmp_path / method), spec, progress=False)
    (row,) = read_manifest(summary.manifest)
    assert row["status"] == "ok", row["error"]
    with Image.open(os.path.join(tmp_path, method, row["image"])) as img:
        assert img.size == (64, 64)
    assert ("cosine" in row["scores"]) == (method == "ovi")
