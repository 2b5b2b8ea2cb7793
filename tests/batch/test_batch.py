"""The batch run on tiny random models: prompt files, seeds, PNG metadata, manifest, failures, resuming."""
import glob
import json
import os

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
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


def test_a_decoder_step_count_its_scheduler_cannot_run_is_refused_before_any_prompt(tiny_models, tmp_path):
    """The stock decoder's scheduler runs 1-999 steps; 1000 is inside the settings' range but must stop the run with
    the other settings, before run.json is written and any model loads (seen failing with the check after the decoder
    loaded: run.json then locked the folder to the refused settings)."""
    base = os.path.join(tiny_models, "kandinsky22")
    spec = MethodSpec("ovi", {"decoder_steps": 1000, "steps": 2, "width": 64, "height": 64},
                      {"prior": os.path.join(base, "kandinsky-2-2-prior"),
                       "decoder": os.path.join(base, "kandinsky-2-2-decoder")})
    with pytest.raises(FuseDreamError, match=r"steps \(1000\) cannot run .* steps that run with it: 1–999"):
        run_batch([PromptItem("p", "a red bus")], str(tmp_path / "run"), spec, progress=False)
    assert not glob.glob(str(tmp_path / "run" / "**" / "*.png"), recursive=True)
    assert not (tmp_path / "run").exists()  # refused with the settings, before run.json locks the folder


def test_an_edited_prompt_file_remakes_the_images_whose_prompt_moved_and_keeps_the_old_ones(tiny_models, tmp_path):
    """A line inserted at the top of a .txt file renumbers every prompt: each record is for another prompt now, so
    all are made again and the old images are moved to superseded/, not lost. Seen failing with the record check
    removed from ``RunFolder.keep_matching``: "3/3 ok", one image made, the manifest kept the old prompts."""
    prompts, out = tmp_path / "p.txt", str(tmp_path / "run")
    prompts.write_text("a red bus\na blue dog\na cat\n")
    run_batch(str(prompts), out, naive_spec(tiny_models, steps=1), progress=False)
    prompts.write_text("a green tree\na red bus\na blue dog\na cat\n")
    again = run_batch(str(prompts), out, naive_spec(tiny_models, steps=1), progress=False)
    assert (again.ok, again.made_now) == (4, 4)
    assert [r["prompt"] for r in read_manifest(out)] == ["a green tree", "a red bus", "a blue dog", "a cat"]
    assert "3 image(s) were made for another prompt" in again.notes[0]
    assert "prompt 'a red bus' then, 'a green tree' now" in again.notes[0]
    assert sorted(n for n in os.listdir(os.path.join(out, "superseded")) if n.endswith(".png")) == [
        "00001__0~0.png", "00002__0~0.png", "00003__0~0.png"]


def test_a_record_counts_only_for_its_own_prompt_and_seed(tiny_models, tmp_path):
    """With ids given, editing one row's prompt or seed remakes that row only (its failed attempts start over).
    Seen failing with the record check removed: nothing was made again."""
    out = str(tmp_path / "run")
    items = [PromptItem("a", "a red bus"), PromptItem("b", "a blue dog", seed=5), PromptItem("c", ":0.5")]
    run_batch(items, out, naive_spec(tiny_models, steps=1), attempts=1, progress=False)
    edited = [PromptItem("a", "a red bus"), PromptItem("b", "a blue dog", seed=6), PromptItem("c", "a cat")]
    again = run_batch(edited, out, naive_spec(tiny_models, steps=1), attempts=1, progress=False)
    assert (again.ok, again.failed, again.made_now) == (3, 0, 2)
    rows = {r["id"]: r for r in read_manifest(out)}
    assert rows["b"]["seed"] == 6 and rows["c"]["prompt"] == "a cat" and rows["c"]["attempts"] == 1
    assert "seed 5 then, 6 now" in again.notes[0]


def test_ids_that_sanitise_to_one_name_get_one_file_each(tiny_models, tmp_path):
    """``a b`` is stored as ``a_b-c8687a08``; an id spelling that key gets a file of its own. Seen failing with
    the ``_HASHED`` test removed from ``file_key`` (the collision check then refused the run; with that check off
    too, one image overwrote the other and the run said 2/2 ok)."""
    assert file_key("a b") == "a_b-c8687a08"
    items = [PromptItem("a b", "a red bus"), PromptItem("a_b-c8687a08", "a blue dog")]
    summary = run_batch(items, str(tmp_path / "run"), naive_spec(tiny_models, steps=1), progress=False)
    rows = read_manifest(summary.manifest)
    assert summary.ok == 2 and len({r["image"] for r in rows}) == 2
    assert len(os.listdir(tmp_path / "run" / "images")) == 2


_ids = st.text(min_size=1, max_size=90)


@given(st.lists(_ids, min_size=1, max_size=4).map(
    lambda ids: list(dict.fromkeys(ids + [file_key(i) for i in ids] + [file_key(i).upper() for i in ids]))))
@settings(max_examples=300, deadline=None)
def test_distinct_ids_never_share_a_file(ids):
    """Every id maps to its own file name, or the run is refused naming the two ids. Seen failing with the
    ``_HASHED`` test removed from ``file_key`` and the collision check of ``_check_keys`` off: Hypothesis found
    ``[':', '_-e7ac0786']``."""
    assume(len(ids) >= 2)
    items = [PromptItem(i, "x") for i in ids]
    try:
        jobs = plan_jobs(items, 0)
    except FuseDreamError as exc:
        assert "would share the image file" in str(exc)
        keys = [file_key(i).casefold() for i in ids]
        assert len(set(keys)) < len(keys)
        return
    assert len({j.key for j in jobs}) == len(ids)
    assert all("/" not in j.key and not j.key.startswith(".") for j in jobs)


def test_ids_whose_files_differ_only_in_case_are_refused_before_anything_is_made(tmp_path):
    with pytest.raises(FuseDreamError, match="'Dog' and 'dog' would share the image file"):
        plan_jobs([PromptItem("Dog", "x"), PromptItem("dog", "y")], 0)


@pytest.mark.parametrize("options, row, words", [
    (["--lr", "nan"], None, "setting 'lr' must be a finite number from 1e-06 to 1, got nan"),
    (["--candidates", "1e12"], None, "setting 'candidates' must be an integer from 1 to 1000000"),
    (["--steps", "1e9"], None, "setting 'steps' must be an integer from 1 to 100000, got 1000000000"),
    (["--images-per-prompt", "1e9"], None, "images per prompt must be an integer from 1 to 1000000"),
    (["--k", "6", "--candidates", "5"], None, "'k' (6) must be at most 'candidates' (5)"),
    (["--seed", "-1"], None, "run seed must be an integer from 0 to"),
    ([], '{"prompt": "a red bus", "seed": 18446744073709551616}', "line 1: seed must be an integer from 0 to"),
    (["--images-per-prompt", "2"], '{"prompt": "a red bus", "seed": 18446744073709551615}',
     "plus 1 (its last image) must be an integer from 0 to"),
])
def test_bad_settings_and_seeds_are_refused_before_the_folder_is_touched(tiny_models, tmp_path, capsys, options,
                                                                       row, words):
    """The nodes' ranges (validation/ranges.py), checked before run.json is written or a model loads. Seen failing
    with ``_check_value`` returning the value unchecked: ``--lr nan`` locked the folder and the run went on."""
    from fusedream_pack.fusedream_ops.batch.cli import main

    prompts, out = tmp_path / "p.jsonl", tmp_path / "run"
    prompts.write_text((row or '{"prompt": "a red bus"}') + "\n")
    code = main([str(prompts), str(out), "--method", "fusedream", "--models", tiny_models, "--steps", "1",
                 "--candidates", "2", "--k", "1", "--no-progress", *options])
    assert code == 2 and words in capsys.readouterr().err
    assert not out.exists()


def test_the_batch_ranges_are_the_nodes_ranges():
    """Kandinsky's nodes declare their own numbers (the others read validation/ranges.py): kept equal here."""
    from fusedream_pack.fusedream_ops.batch.methods import setting_ranges
    from fusedream_pack.nodes import NODE_CLASS_MAPPINGS

    def declared(node, names):
        inputs = NODE_CLASS_MAPPINGS[node].INPUT_TYPES()["required"]
        return {name: (inputs[key][1]["min"], inputs[key][1]["max"]) for name, key in names.items()}

    def table(method, names):
        return {name: (r.low, r.high) for name, r in setting_ranges(method).items() if name in names}

    decoder = {"decoder_steps": "steps", "guidance": "guidance", "width": "width", "height": "height"}
    ovi = {"num_tokens": "num_tokens", "steps": "steps", "lr": "lr"}
    assert table("textemb", decoder) == declared("FuseDreamKandinsky22Decoder", decoder)
    assert table("ovi", ovi) == declared("FuseDreamOVIPrior", ovi)
    clipag = {n: n for n in ("size", "steps", "lr", "views", "patches", "patch_weight", "input_noise", "grad_clip",
                             "threshold", "weight_decay")}
    assert table("clipag-pixels", clipag) == declared("FuseDreamCLIPAGSynthesis", clipag)


def test_damaged_records_are_made_again_and_their_old_files_kept_a_damaged_manifest_or_run_json_is_named(
        tiny_models, tmp_path):
    """A truncated record: its image is made again, the old files go to superseded/, the run says so. A truncated
    manifest line or run.json: refused with the file and line. Seen failing with ``_read_record`` no longer catching
    the JSON error: a JSONDecodeError traceback."""
    items = [PromptItem("p1", "a red bus"), PromptItem("p2", "a blue dog")]
    out = tmp_path / "run"
    run_batch(items, str(out), naive_spec(tiny_models, steps=1), progress=False)
    record = out / "records" / "p1__0.json"
    record.write_text(record.read_text()[:40])
    manifest = out / "manifest.jsonl"
    manifest.write_text(manifest.read_text()[:-30])
    with pytest.raises(FuseDreamError, match=r"manifest.jsonl line 2 is damaged .* rebuilds"):
        read_manifest(str(out))
    again = run_batch(items, str(out), naive_spec(tiny_models, steps=1), progress=False)
    assert (again.ok, again.made_now) == (2, 1)
    assert "records/p1__0.json is not JSON (line 1 column" in again.notes[0]
    assert sorted(os.listdir(out / "superseded")) == ["p1__0~0.json", "p1__0~0.png"]
    assert [r["key"] for r in read_manifest(str(out))] == ["p1__0", "p2__0"]
    (out / "run.json").write_text((out / "run.json").read_text()[:25])
    with pytest.raises(FuseDreamError, match=r"run.json' is damaged \(line \d+ column \d+"):
        run_batch(items, str(out), naive_spec(tiny_models, steps=1), progress=False)


def test_an_embedded_run_stops_when_its_device_is_lost_and_resumes_in_a_new_process(tiny_models, tmp_path,
                                                                                       monkeypatch):
    """A sticky device error (every later use of the device raises) cannot be cleared in this process: the run
    records the job that hit it and stops with a message instead of failing every other job. Seen failing with
    ``check_device`` no longer called by ``ImageWorker._one``: the run went on and failed the healthy prompt."""
    from fusedream_pack.fusedream_ops.batch import pools
    from fusedream_pack.fusedream_ops.fixtures.faulty_workers import BREAK, StickyDeviceWorker

    items = [PromptItem("bad", f"a red bus, {BREAK}"), PromptItem("good", "a blue dog")]
    out = str(tmp_path / "run")
    monkeypatch.setattr(pools, "ImageWorker", StickyDeviceWorker)
    with pytest.raises(FuseDreamError, match="(?s)in an error state after image bad__0 .*illegal memory access.* "
                                             "Run the same command again"):
        run_batch(items, out, naive_spec(tiny_models, steps=1), attempts=1, progress=False)
    assert [(r["id"], r["status"]) for r in read_manifest(out)] == [("bad", "failed")]
    monkeypatch.undo()
    again = run_batch(items, out, naive_spec(tiny_models, steps=1), attempts=1, progress=False)
    assert (again.ok, again.failed, again.made_now) == (1, 1, 1)


def test_a_prompt_file_line_too_long_or_an_id_with_control_characters_is_refused_when_read(tmp_path):
    """Prompt files go through the same bounds as every prompt input, before any model loads. Checked: without the
    two checks in ``batch/prompts._item`` both files are read without error."""
    long = tmp_path / "long.jsonl"
    long.write_text(json.dumps({"id": "a", "prompt": "x" * 5000}) + "\n")
    with pytest.raises(FuseDreamError, match="prompt is 5,000 characters long"):
        read_prompts(str(long))
    bad_id = tmp_path / "ids.jsonl"
    bad_id.write_text(json.dumps({"id": "a\x07b", "prompt": "a red bus"}) + "\n")
    with pytest.raises(FuseDreamError, match="control character"):
        read_prompts(str(bad_id))
