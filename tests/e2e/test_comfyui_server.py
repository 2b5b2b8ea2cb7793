"""End to end in a real ComfyUI: the pack loads, its example workflows run, optimizing nodes stream their series,
keep frames and stop on Cancel.

Skipped unless ``COMFYUI_PATH`` (a ComfyUI checkout, never inside this repo) and ``COMFYUI_PYTHON`` (a Python with
ComfyUI's and the pack's requirements) are set; see docs/monitor.md for the commands. The server runs on a free
loopback port with the pack's tiny fixture models and the test-only probe pack (``tests/e2e/probe_pack``).
The example workflows' work sizes (steps, candidates, augmentation copies...) are capped (``CAPS``; steps by
``FUSEDREAM_E2E_MAX_STEPS``, default 6) so they finish quickly on a CPU.
"""
import glob
import io
import json
import os
import shutil
import tempfile

import pytest

from comfy_server import CAPS, PACK_DIR, PACK_LINK_NAME, PROBE_PACK_DIR, ComfyServer, ui_to_api, write_fixture_models
from workflow_check import load_snapshot, object_info_problems, trimmed, without_absent_files
from testkit.hang_guard import HANG_S

pytestmark = pytest.mark.comfyui

COMFYUI_PATH = os.environ.get("COMFYUI_PATH")
COMFYUI_PYTHON = os.environ.get("COMFYUI_PYTHON")
EVENT = "fusedream.progress"
UI_KEY = "fusedream_series"
# The "Toy world" templates name the toy-world models (tests/fixtures/toyworld), not the tiny random ones written here;
# tests/toyworld/test_claims_ovi.py runs them on those models.
WORKFLOWS = sorted(p for p in glob.glob(os.path.join(PACK_DIR, "example_workflows", "*.json"))
                   if not os.path.basename(p).startswith("Toy world"))
NEED_STOCK_WEIGHTS = {"Mix – SD 1.5 batch ranked by AugCLIP.json"}
"""Templates of which nothing runs without stock weights (an SD 1.5 checkpoint): only checked against /object_info.
Of the others, the nodes that name absent stock weights (an upscale model, SD 1.5) and what follows them are left
out."""
FRAMES = 5
"""Frames of the animated GIF 'frames.gif' in the input folder, which the rank-loaded-images template loads."""

if not (COMFYUI_PATH and COMFYUI_PYTHON):
    pytest.skip("set COMFYUI_PATH and COMFYUI_PYTHON to run the real-ComfyUI tests", allow_module_level=True)


@pytest.fixture(scope="module")
def server():
    base = tempfile.mkdtemp(prefix="fusedream-e2e-")
    try:
        write_fixture_models(os.path.join(base, "models"))
        write_frames_gif(os.path.join(base, "input", "frames.gif"))
        srv = ComfyServer(COMFYUI_PATH, COMFYUI_PYTHON, base=base, extra_packs=(PROBE_PACK_DIR,))
        with srv:
            yield srv
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture(scope="module")
def object_info(server):
    return server.object_info()


def write_frames_gif(path):
    """An animated GIF of FRAMES frames, a coloured square moving across (Load Image returns all frames)."""
    from PIL import Image, ImageDraw

    os.makedirs(os.path.dirname(path), exist_ok=True)
    frames = []
    for i in range(FRAMES):
        frame = Image.new("RGB", (48, 48), (90, 90, 90))
        ImageDraw.Draw(frame).rectangle([4 + 8 * i, 14, 20 + 8 * i, 30], fill=(220, 40 * i, 30))
        frames.append(frame)
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100, loop=0)


def probe_prompt(steps, keep_frames_every=0, preview_every=5, step_delay=0.0, save_frames=False, wait_for_cancel=False):
    prompt = {
        "1": {"class_type": "FuseDreamProbe_Monitor",
              "inputs": {"steps": steps, "size": 32, "seed": 3, "step_delay": step_delay,
                         "preview_every": preview_every, "keep_frames_every": keep_frames_every,
                         "wait_for_cancel": wait_for_cancel}},
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    if save_frames:
        prompt["3"] = {"class_type": "SaveAnimatedWEBP",
                       "inputs": {"images": ["1", 1], "filename_prefix": "probe", "fps": 6.0, "lossless": True,
                                  "quality": 80, "method": "fastest"}}
    return prompt


def monitored_classes(object_info):
    """Node classes that run a NodeMonitor: they take its keep_frames_every widget."""
    return {name for name, info in object_info.items()
            if "keep_frames_every" in {**info["input"].get("required", {}), **info["input"].get("optional", {})}}


def test_every_family_of_the_pack_loads_in_comfyui(server, object_info):
    from fusedream_pack.nodes import FAILED_FAMILIES, NODE_CLASS_MAPPINGS

    log = server.log_text()
    assert PACK_LINK_NAME in log
    failed = [line for line in log.splitlines() if ("Cannot import" in line or "IMPORT FAILED" in line)
              and (PACK_LINK_NAME in line or "probe_pack" in line)]
    assert not failed, "\n".join(failed)
    missing = sorted(set(NODE_CLASS_MAPPINGS) - set(object_info))
    assert not missing, f"nodes missing in ComfyUI: {missing}\n{log[-3000:]}"
    assert "FuseDreamProbe_Monitor" in object_info
    assert not FAILED_FAMILIES, FAILED_FAMILIES


def test_chart_extension_is_served_to_the_browser(server):
    extensions = server.get("/extensions")
    ours = sorted(e for e in extensions if e.startswith(f"/extensions/{PACK_LINK_NAME}/"))
    assert ours == sorted(f"/extensions/{PACK_LINK_NAME}/{name}" for name in os.listdir(os.path.join(PACK_DIR, "web", "js"))
                          if name.endswith(".js"))
    body = server.get(f"/extensions/{PACK_LINK_NAME}/fusedream_chart.js").decode()
    assert "registerExtension" in body and "fusedream.progress" in body


def test_optimizing_node_streams_its_series_keeps_frames_and_stores_the_chart(server):
    result = server.run(probe_prompt(40, keep_frames_every=10, preview_every=10, step_delay=0.005, save_frames=True),
                        timeout=HANG_S)
    assert result.status == "success", result.history
    events = result.of_type(EVENT)
    assert events and all(e["node"] == "1" and e["total"] == 40 for e in events)
    assert events[0]["step"] == 1 and events[-1]["step"] == 40
    assert [s for e in events for s in e["chunk"]["steps"]] == list(range(1, 41))
    assert len(events) < 40  # rate limited: 40 steps of 0.005 s on the probe's step clock
    assert result.binary_frames == 4  # previews at steps 10, 20, 30, 40
    (series,) = result.outputs["1"][UI_KEY]
    assert series["steps"] == list(range(1, 41)) and set(series["series"]) == {"augclip", "lpips"}
    executed = [m for m in result.of_type("executed") if m["node"] == "1"]
    assert executed and executed[0]["output"][UI_KEY] == result.outputs["1"][UI_KEY]
    (webp,) = result.outputs["3"]["images"]
    from PIL import Image

    animation = Image.open(io.BytesIO(server.view(webp["filename"], webp["subfolder"], webp["type"])))
    assert animation.n_frames == 4  # frames every 10 steps of 40


def test_cancel_stops_an_optimizing_node_within_a_step(server):
    """The probe holds after step 1 until the interrupt flag is set, so the steps after Cancel are counted, not
    timed. Checked: with the monitor swallowing the interrupt (its own check and the progress bar's), it fails."""
    def interrupt_on_first_event(srv, msg):
        if msg["type"] == EVENT and msg["data"]["step"] == 1:
            srv.post("/interrupt")

    result = server.run(probe_prompt(3000, step_delay=0.01, wait_for_cancel=True), timeout=HANG_S,
                        on_message=interrupt_on_first_event)
    kinds = [m["type"] for m in result.messages]
    assert "execution_interrupted" in kinds and "execution_success" not in kinds
    assert max(e["step"] for e in result.of_type(EVENT)) == 1  # step 2 stopped at its interrupt check


def cap_work(prompt, object_info):
    """Lower the work-size inputs listed in CAPS (never below the input's own minimum)."""
    for node in prompt.values():
        info = object_info[node["class_type"]]["input"]
        specs = {**info.get("required", {}), **info.get("optional", {})}
        for name, cap in CAPS.items():
            value = node["inputs"].get(name)
            if isinstance(value, int) and not isinstance(value, bool) and value > cap and name in specs:
                node["inputs"][name] = max(cap, specs[name][1].get("min", 0) if len(specs[name]) > 1 else 0)
    return prompt


def test_the_committed_stock_snapshot_matches_this_comfyui(object_info):
    snapshot = load_snapshot()
    assert trimmed(object_info, snapshot) == snapshot


@pytest.mark.parametrize("path", WORKFLOWS, ids=[os.path.basename(p) for p in WORKFLOWS])
def test_every_template_is_valid_against_this_comfyuis_object_info(object_info, path):
    with open(path, encoding="utf-8") as f:
        assert object_info_problems(json.load(f), object_info) == []


RUNNABLE = [p for p in WORKFLOWS if os.path.basename(p) not in NEED_STOCK_WEIGHTS]


@pytest.mark.parametrize("path", RUNNABLE, ids=[os.path.basename(p) for p in RUNNABLE])
def test_example_workflow_runs_and_its_optimizers_report(server, object_info, path):
    with open(path) as f:
        workflow = json.load(f)
    prompt, dropped = without_absent_files(cap_work(ui_to_api(workflow, object_info), object_info), object_info)
    kept = {node["class_type"] for node in prompt.values()}
    if os.path.basename(path).startswith("Mix – "):
        assert kept & {"SaveImage", "PreviewImage"}, "nothing of the template runs without stock weights"
    else:
        assert not dropped, "the pack's own templates need no stock weights"
    result = server.run(prompt, timeout=HANG_S)
    errors = result.of_type("execution_error")
    assert result.status == "success", json.dumps(errors or result.history.get("status"), indent=1)[:4000]
    nodes_with_events = {e["node"] for e in result.of_type(EVENT)}
    cached = {n for c in result.of_type("execution_cached") for n in c.get("nodes", [])}
    for nid, node in prompt.items():
        if node["class_type"] in monitored_classes(object_info) and nid not in cached:
            assert nid in nodes_with_events, f"{node['class_type']} (node {nid}) sent no {EVENT} event"
            assert result.outputs.get(nid, {}).get(UI_KEY), f"{node['class_type']} (node {nid}) has no ui series"


def test_the_weight_free_mixing_templates_run_with_their_stock_nodes(server, object_info):
    """Upscale Image By doubles FuseDream's image; Rank Images ranks every frame of a loaded animated GIF."""
    runs = {}
    for name in ("Mix – FuseDream upscaled", "Mix – rank loaded images"):
        with open(os.path.join(PACK_DIR, "example_workflows", f"{name}.json"), encoding="utf-8") as f:
            prompt, _ = without_absent_files(cap_work(ui_to_api(json.load(f), object_info), object_info), object_info)
        runs[name] = (prompt, server.run(prompt, timeout=900))
    from PIL import Image

    prompt, result = runs["Mix – FuseDream upscaled"]
    assert result.status == "success", result.history
    scale = next(nid for nid, node in prompt.items() if node["class_type"] == "ImageScaleBy")
    save = next(nid for nid, node in prompt.items() if node["inputs"].get("images") == [scale, 0])
    (saved,) = result.outputs[save]["images"]
    upscaled = Image.open(io.BytesIO(server.view(saved["filename"], saved["subfolder"], saved["type"])))
    assert upscaled.size == (64, 64)  # the tiny BigGAN's 32 px image, ×2
    prompt, result = runs["Mix – rank loaded images"]
    assert result.status == "success", result.history
    rank = next(nid for nid, node in prompt.items() if node["class_type"] == "FuseDreamRankImages")
    (text,) = result.outputs[rank]["text"]
    lines = text.splitlines()
    assert len(lines) == FRAMES and sorted(int(line.split("#")[1].split()[0]) for line in lines) == list(range(FRAMES))


def test_chart_draws_live_and_comes_back_in_headless_chromium(server, tmp_path):
    """The chart in ComfyUI's real frontend (see browser_check.py for each step; screenshots in tmp_path)."""
    from browser_check import Browser, check, find_chromium

    chromium = find_chromium()
    if chromium is None:
        pytest.skip("no chromium on PATH (apt-get install chromium) or in $CHROMIUM")
    browser = Browser(chromium)
    try:
        report = check(server, browser, str(tmp_path))
    finally:
        browser.close()
    assert report["extension_registered"]
    # the chart saves no value: the probe's widgets only (its optional wait_for_cancel last)
    assert report["saved_widget_values"] == [60, 64, 7, "fixed", 0.05, 5, 10, False]
    assert "fusedream_chart" not in report["api_prompt_inputs"]
    assert report["before_run"]["points"] == 0 and report["before_run"]["visible"]
    assert 10 <= report["mid_run"]["points"] < 60 and report["mid_run"]["series"] == "augclip,lpips"
    assert report["after_run"]["points"] == 60
    assert report["collapsed"]["collapsed"] and not report["collapsed"]["visible"]
    assert report["resized"]["visible"] and report["resized"]["w"] > report["after_run"]["w"]
    assert report["resized"]["canvasW"] >= report["resized"]["w"]  # the canvas follows the widget's size
    assert report["rerun_min_points"] < 60  # the re-run started a fresh chart
    assert report["reloaded"]["points"] == 60  # the same workflow loaded again shows its latest run at once
    assert report["restored_from_history"]["points"] == 60
    assert report["removed_has_no_chart_left"]
    ours = [c for c in report["console_errors"] if "fusedream" in c.lower()]
    assert not ours, ours
