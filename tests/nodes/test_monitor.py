"""NodeMonitor: what an optimizing node sends while it runs and returns after it.

ComfyUI's ``server`` and ``comfy.utils`` / ``comfy.model_management`` modules are replaced by small recorders in
``sys.modules`` so the pack's real adapter (``nodes/comfy.py``) is exercised exactly as inside ComfyUI.
"""
import json
import sys
import types

import numpy as np
import pytest
import torch

from fusedream_pack.fusedream_ops.core.progress import Step, report
from fusedream_pack.nodes import comfy as comfy_adapter
from fusedream_pack.nodes import monitor as monitor_module
from fusedream_pack.nodes import run_series
from fusedream_pack.nodes.monitor import EVENT, MONITOR_INPUTS, UI_KEY, FrameRecorder, NodeMonitor, SeriesLog, segments


class FakeClock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self):
        return self.now


@pytest.fixture
def comfy_server(monkeypatch):
    """Records what the adapter sends to ComfyUI: events, progress updates with their previews, interrupts."""
    sent = types.SimpleNamespace(events=[], progress=[], interrupt_at=None, checks=0)

    class Routes:
        def __init__(self):
            self.paths = {}

        def get(self, path):
            def add(handler):
                self.paths[path] = handler
                return handler
            return add

    class PromptServer:
        instance = None
        client_id = "client-1"
        last_prompt_id = "prompt-1"
        routes = Routes()

        def send_sync(self, event, data, sid=None):
            json.dumps(data)  # what the websocket does with it
            sent.events.append((event, data, sid))

    PromptServer.instance = PromptServer()

    class ProgressBar:
        def __init__(self, total, node_id=None):
            self.node_id = node_id

        def update_absolute(self, value, total=None, preview=None):
            sent.progress.append((self.node_id, value, total, preview))

    class Interrupted(Exception):
        pass

    def throw_exception_if_processing_interrupted():
        sent.checks += 1
        if sent.interrupt_at is not None and sent.checks >= sent.interrupt_at:
            raise Interrupted()

    server = types.ModuleType("server")
    server.PromptServer = PromptServer
    comfy_pkg = types.ModuleType("comfy")
    utils = types.ModuleType("comfy.utils")
    utils.ProgressBar = ProgressBar
    mm = types.ModuleType("comfy.model_management")
    mm.throw_exception_if_processing_interrupted = throw_exception_if_processing_interrupted
    sent.Interrupted = Interrupted
    monkeypatch.setitem(sys.modules, "server", server)
    monkeypatch.setitem(sys.modules, "comfy", comfy_pkg)
    monkeypatch.setitem(sys.modules, "comfy.utils", utils)
    monkeypatch.setitem(sys.modules, "comfy.model_management", mm)
    return sent


def fake_run(on_step, total, size=8, seed=0, values=True):
    """A stand-in op: a random image per step and two named series, reported through ``report``."""
    g = torch.Generator().manual_seed(seed)
    images = []
    for i in range(1, total + 1):
        img = torch.rand(2, 3, size, size, generator=g)
        images.append(img)
        vals = {"augclip": 0.1 + 0.001 * i, "lpips": 1.0 / i} if values else None
        report(on_step, i, total, vals, img)
    return images


def progress_events(sent):
    return [data for event, data, _ in sent.events if event == EVENT]


def test_event_payload_matches_the_documented_schema(comfy_server):
    clock = FakeClock()
    mon = NodeMonitor("12", total=3, label="optimize", clock=clock)
    for i in range(1, 4):
        clock.now += 1.0
        mon(Step(i, 3, {"augclip": 0.5 + i, "lpips": 0.25}))
    events = comfy_server.events
    assert [e[0] for e in events] == [EVENT] * 3
    assert all(sid == "client-1" for _, _, sid in events)
    first = events[0][1]
    assert set(first) == {"node", "prompt_id", "label", "step", "total", "series", "chunk"}
    assert first["node"] == "12" and first["label"] == "optimize" and first["prompt_id"] == "prompt-1"
    assert (first["step"], first["total"]) == (1, 3)
    assert first["series"] == {"augclip": 1.5, "lpips": 0.25}
    assert first["chunk"] == {"steps": [1], "series": {"augclip": [1.5], "lpips": [0.25]}}
    assert all(isinstance(v, float) for v in events[2][1]["series"].values())


def test_fast_steps_are_rate_limited_but_no_point_is_lost(comfy_server):
    clock = FakeClock()
    mon = NodeMonitor("3", total=100, clock=clock)
    for i in range(1, 101):
        clock.now += 0.01  # 100 steps per second: ten per allowed event
        mon(Step(i, 100, {"augclip": float(i)}))
    events = progress_events(comfy_server)
    assert 9 <= len(events) <= 12
    assert events[0]["step"] == 1 and events[-1]["step"] == 100
    times = [1000.0 + 0.01 * e["step"] for e in events[:-1]]
    assert all(b - a >= monitor_module.MIN_EVENT_INTERVAL - 1e-9 for a, b in zip(times, times[1:]))
    chunk_steps = [s for e in events for s in e["chunk"]["steps"]]
    assert chunk_steps == list(range(1, 101))
    assert [v for e in events for v in e["chunk"]["series"]["augclip"]] == [float(i) for i in range(1, 101)]


def test_slow_steps_send_one_event_per_step(comfy_server):
    clock = FakeClock()
    mon = NodeMonitor("3", total=5, clock=clock)
    for i in range(1, 6):
        clock.now += 2.0
        mon(Step(i, 5, {"augclip": float(i)}))
    assert [e["step"] for e in progress_events(comfy_server)] == [1, 2, 3, 4, 5]


def test_missing_value_is_null_in_chunk_and_ui(comfy_server):
    clock = FakeClock()
    mon = NodeMonitor("1", total=3, clock=clock)
    mon(Step(1, 3, {"augclip": 0.1}))
    mon(Step(2, 3, {"augclip": 0.2, "lpips": 0.7}))
    mon(Step(3, 3, {"augclip": 0.3}))
    series = mon.ui()[UI_KEY][0]["series"]
    assert series == {"augclip": [0.1, 0.2, 0.3], "lpips": [None, 0.7, None]}
    assert progress_events(comfy_server)[-1]["chunk"]["series"]["lpips"] == [0.7, None]


def test_ui_output_holds_the_whole_series_and_is_json(comfy_server):
    mon = NodeMonitor("7", total=20, label="")
    fake_run(mon, 20)
    ui = json.loads(json.dumps(mon.ui()))
    (entry,) = ui[UI_KEY]
    assert entry["total"] == 20
    assert entry["steps"] == list(range(1, 21))
    assert entry["series"]["lpips"] == pytest.approx([1.0 / i for i in range(1, 21)])


def test_steps_without_values_send_no_event_but_still_progress(comfy_server):
    mon = NodeMonitor("7", total=4)
    fake_run(mon, 4, values=False)
    assert progress_events(comfy_server) == []
    assert [p[1] for p in comfy_server.progress] == [1, 2, 3, 4]
    assert mon.ui()[UI_KEY][0]["steps"] == []


def test_previews_every_n_steps_and_at_the_last_step(comfy_server):
    mon = NodeMonitor("5", total=12, preview_every=5)
    fake_run(mon, 12)
    with_preview = [value for _, value, _, preview in comfy_server.progress if preview is not None]
    assert with_preview == [5, 10, 12]
    kind, image, max_size = next(p[3] for p in comfy_server.progress if p[3] is not None)
    assert kind == "JPEG" and image.size == (8, 8) and image.mode == "RGB" and max_size == 8  # never enlarged
    assert all(node == "5" for node, *_ in comfy_server.progress)


def test_frames_have_the_promised_count_and_equal_the_previews(comfy_server):
    mon = NodeMonitor("5", total=12, preview_every=3, keep_frames_every=3)
    images = fake_run(mon, 12)
    frames = mon.frames()
    assert mon.recorder.steps() == [3, 6, 9, 12]
    assert frames.shape == (4, 8, 8, 3) and frames.dtype == torch.float32
    previews = {value: np.asarray(preview[1]) for _, value, _, preview in comfy_server.progress if preview is not None}
    for k, step in enumerate([3, 6, 9, 12]):
        assert np.array_equal((frames[k].numpy() * 255).round().astype(np.uint8), previews[step])
        assert torch.allclose(frames[k], images[step - 1][0].movedim(0, -1), atol=0.5 / 255 + 1e-6)


def test_final_frame_is_kept_when_total_is_off_the_grid(comfy_server):
    mon = NodeMonitor(None, total=10, keep_frames_every=4)
    images = fake_run(mon, 10)
    assert mon.recorder.steps() == [4, 8, 10]
    assert torch.allclose(mon.frames()[-1], images[-1][0].movedim(0, -1), atol=0.5 / 255 + 1e-6)


def test_zero_keeps_only_the_final_frame(comfy_server):
    mon = NodeMonitor(None, total=6, keep_frames_every=0)
    fake_run(mon, 6)
    assert mon.recorder.steps() == [6]


def test_frames_without_images_is_a_valid_image_batch():
    mon = NodeMonitor(None, total=2)
    mon(Step(1, 2, {"a": 1.0}))
    mon(Step(2, 2, {"a": 2.0}))
    assert mon.frames().shape == (1, 1, 1, 3)


def test_frame_memory_is_bounded_and_frames_still_span_the_run():
    rec = FrameRecorder(every=1, max_frames=16)
    img = torch.zeros(1, 3, 4, 4)
    for i in range(1, 1001):
        rec(Step(i, 1000, {}, img))
    steps = rec.steps()
    assert len(steps) <= 16
    assert steps[-1] == 1000
    assert steps[0] <= 1000 // 8
    gaps = np.diff(steps[:-1])
    assert len(set(gaps.tolist())) == 1  # evenly spaced


def test_frame_byte_budget_limits_large_images():
    rec = FrameRecorder(every=1, max_frames=256, max_bytes=10 * 3 * 32 * 32)
    img = torch.zeros(1, 3, 32, 32)
    for i in range(1, 101):
        rec(Step(i, 100, {}, img))
    assert len(rec.frames) <= 10
    assert rec.steps()[-1] == 100


def test_series_log_is_bounded_and_spans_the_run():
    log = SeriesLog(max_points=50)
    for i in range(1, 10_001):
        log.add(i, {"augclip": float(i)}, last=i == 10_000)
    assert len(log.steps) <= 50
    assert log.steps[0] == 1 and log.steps[-1] == 10_000
    assert log.columns()["augclip"] == [float(s) for s in log.steps]
    assert len(set(np.diff(log.steps[:-1]).tolist())) == 1


def test_interrupt_stops_the_op_at_that_step(comfy_server):
    comfy_server.interrupt_at = 4
    mon = NodeMonitor("9", total=50)
    with pytest.raises(comfy_server.Interrupted):
        fake_run(mon, 50)
    assert [p[1] for p in comfy_server.progress] == [1, 2, 3]


def test_outside_comfyui_nothing_is_sent_and_the_run_still_works():
    assert "server" not in sys.modules or not hasattr(sys.modules["server"], "PromptServer")
    mon = NodeMonitor("1", total=5, keep_frames_every=2)
    fake_run(mon, 5)
    assert mon.recorder.steps() == [2, 4, 5]
    assert mon.ui()[UI_KEY][0]["steps"] == [1, 2, 3, 4, 5]


def test_monitor_inputs_have_tooltips_and_valid_defaults():
    for name, (kind, opts) in MONITOR_INPUTS.items():
        assert kind == "INT" and opts["tooltip"]
        assert opts["min"] <= opts["default"] <= opts["max"]


def test_a_cancelled_nodes_series_stays_on_the_server_for_the_page(comfy_server):
    """ComfyUI's history has no ui output for a node that did not finish: the store keeps the series the page
    lost on a reload (issue 20). Checked: without ``run_series.remember`` in NodeMonitor this fails (``{}``)."""
    comfy_server.interrupt_at = 43
    mon = NodeMonitor("9", total=5000, label="pixels")
    with pytest.raises(comfy_server.Interrupted):
        fake_run(mon, 5000, size=4)
    kept = run_series.store().of_prompt("prompt-1")
    assert kept["9"]["complete"] is False
    assert kept["9"]["entry"]["steps"] == list(range(1, 43)) and kept["9"]["entry"]["total"] == 5000
    assert kept["9"]["entry"]["label"] == "pixels"
    comfy_server.interrupt_at = None
    done = NodeMonitor("10", total=3)
    fake_run(done, 3, size=4)
    assert run_series.store().of_prompt("prompt-1")["10"] == {"entry": done.ui()[UI_KEY][0], "complete": True}
    assert "/fusedream/series/{prompt_id}" in type(comfy_server_instance()).routes.paths
    assert run_series.store().of_prompt("another prompt") == {}


def comfy_server_instance():
    return sys.modules["server"].PromptServer.instance


def test_the_store_forgets_the_oldest_prompts():
    store = run_series.RecentSeries(max_prompts=3)
    for k in range(5):
        mon = NodeMonitor(str(k), total=2)
        fake_run(mon, 2, size=2)
        store.add(f"p{k}", str(k), mon.series)
    assert store.of_prompt("p0") == {} and store.of_prompt("p1") == {}
    assert list(store.of_prompt("p4")) == ["4"]


def test_segments_go_into_every_event_and_the_ui_entry(comfy_server):
    seg = segments("cell", 2, ["0.65 center", "0.5 center"])
    clock = FakeClock()
    mon = NodeMonitor("4", total=4, clock=clock, segment=seg)
    for i in range(1, 5):
        clock.now += 1.0
        mon(Step(i, 4, {"augclip": 0.1 * i}))
    assert all(e["segment"] == seg for e in progress_events(comfy_server))
    assert mon.ui()[UI_KEY][0]["segment"] == {"unit": "cell", "size": 2, "labels": ["0.65 center", "0.5 center"]}
    many = segments("cell", 1, [f"label {k}" * 10 for k in range(1000)])
    assert many["labels"] == [] and segments("cell", 1, ["x" * 100])["labels"] == ["x" * 40]


@pytest.mark.parametrize("size, side", [((32, 32), 32), ((224, 100), 224), ((1024, 768), 512), ((1, 1), 1)])
def test_live_previews_are_never_enlarged(size, side):
    """ComfyUI scales a preview to fit the side it is given, up as well as down (ImageOps.contain): a 32 px image
    sent with 512 arrived as 512 x 512 (issue 20). Checked: with the old constant 512 the small cases fail."""
    assert comfy_adapter.preview_side(size) == side
