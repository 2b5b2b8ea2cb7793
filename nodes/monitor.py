"""Everything an optimizing node shows while it runs, as one ``on_step`` callback.

Per step: the interrupt check (Cancel stops within one step), the progress bar, a JPEG preview every
``preview_every`` steps (and at the last step), the step's named series values, and a frame every
``keep_frames_every`` steps (plus the final one). Series values go to the browser as rate-limited
``fusedream.progress`` websocket events; after the run the whole series goes into the node's ``ui`` output
(so the chart is in the history and comes back when a run is reopened), and the frames come out as an IMAGE batch.

Event ``fusedream.progress`` (sent through ComfyUI's server to the client that queued the prompt; nothing is
sent outside ComfyUI)::

    {"node": "12",            # the node's unique id (hidden input UNIQUE_ID)
     "prompt_id": "5b1f...",  # the prompt being executed (ComfyUI's last_prompt_id; null outside ComfyUI)
     "label": "",             # optional phase name, e.g. "optimize"
     "step": 40, "total": 1000,
     "series": {"augclip": 0.31, "lpips": 0.42},          # the values at ``step``
     "chunk": {"steps": [37, 38, 39, 40],                 # every point since the previous event,
               "series": {"augclip": [...], "lpips": [...]}}}   # so rate limiting drops no point

At most one event per node every ``MIN_EVENT_INTERVAL`` seconds; the first and the last step are always sent.
A value missing at a step is ``null`` in the chunk and in the ``ui`` series. A NaN/inf value is never sent: it stops
the run with a ``[FuseDream]`` error naming the series and the step. A node that runs the same optimisation several
times in a row (the composition grid search: one run per cell) adds ``"segment": {"unit": "cell", "size": 10,
"labels": ["0.65 top-left", ...]}`` (steps per run, one label per run) to every event and to the ``ui`` entry, so
the chart can show each run on its own and say "cell 4 / 18 · step 7 / 10".

``ui`` output::

    {"fusedream_series": [{"label": "", "total": 1000, "steps": [...], "series": {"augclip": [...], ...}}]}

The series is also kept on the server while and after the node runs (``run_series.py``), for a page that was
reloaded or a run that was cancelled (ComfyUI's history has no ``ui`` output for a node that did not finish).

holding at most ``MAX_POINTS`` points per run: when full, every other point is dropped and only every
second new step is kept, so the series still spans the whole run evenly (the last step is always kept).
"""
from __future__ import annotations

import math
import threading
import time
from typing import Callable, Optional

import numpy as np
import torch

from ..fusedream_ops.core.errors import FuseDreamError
from ..fusedream_ops.core.progress import Step
from . import comfy, run_series

EVENT = "fusedream.progress"
UI_KEY = "fusedream_series"
MIN_EVENT_INTERVAL = 0.1  # seconds between two events of one node; the first and last steps are always sent
MAX_POINTS = 2000  # points per run kept for the ui output (about 2 events' worth of JSON per series at most)
MAX_FRAMES = 256
MAX_FRAME_BYTES = 256 * 1024 * 1024  # frames are kept as uint8 on the CPU: 256 frames of 512x512 = 192 MiB
MAX_SEGMENT_LABELS = 256
MAX_LABEL_CHARS = 40

MONITOR_INPUTS = {
    "preview_every": ("INT", {"default": 5, "min": 1, "max": 1000, "advanced": True,
                              "tooltip": "Send a live preview of the current image every N steps."}),
    "keep_frames_every": ("INT", {"default": 0, "min": 0, "max": 10000,
                                  "tooltip": "Keep the current image every N steps (plus the final one) as the "
                                             "'frames' output, e.g. for Save Animated WEBP. 0 keeps only the final "
                                             "frame."}),
}


def _to_uint8(image: torch.Tensor) -> torch.Tensor:
    """The first image of ``[B,3,H,W]`` in 0..1 as ``[H,W,3]`` uint8 on the CPU, rounded as the JPEG preview is."""
    return (image[0].detach().float().clamp(0, 1).movedim(0, -1) * 255.0 + 0.5).to(torch.uint8).cpu()


def _preview_image(frame: torch.Tensor):
    from PIL import Image

    return Image.fromarray(np.ascontiguousarray(frame.numpy()))


def require_finite_values(step: Step, label: str = "") -> None:
    """A NaN/inf series value stops the run at its first step: it would be invalid JSON in the event and a broken
    result."""
    for name, value in step.values.items():
        if not math.isfinite(float(value)):
            where = f"{label} " if label else ""
            raise FuseDreamError(f"{where}'{name}' became {float(value)} at step {step.step} of {step.total}: the run "
                                 f"diverged (lower the learning rate) or a model holds NaN weights.")


class FrameRecorder:
    """Keeps one image every ``every`` steps plus the final one, within ``max_frames`` and ``max_bytes``.

    Frames are stored as uint8 (exactly the pixels of the JPEG preview before compression). When full it drops
    every other kept frame and doubles its interval, so memory stays bounded while the frames still span the
    whole run evenly.
    """

    def __init__(self, every: int, max_frames: int = MAX_FRAMES, max_bytes: int = MAX_FRAME_BYTES):
        self.every = every
        self.max_frames = max_frames
        self.max_bytes = max_bytes
        self.frames: list[tuple[int, torch.Tensor]] = []

    def wants(self, step: Step) -> bool:
        if step.image is None:
            return False
        return step.step == step.total or (self.every > 0 and step.step % self.every == 0)

    def add(self, step_index: int, frame: torch.Tensor, last: bool) -> None:
        """Keep ``frame`` (``[H,W,3]`` uint8) taken at ``step_index``."""
        self.frames.append((step_index, frame))
        limit = max(1, min(self.max_frames, self.max_bytes // max(1, frame.numel())))
        while len(self.frames) > limit:
            self.every = max(1, self.every) * 2
            kept = [f for f in self.frames if f[0] % self.every == 0]
            if last and (not kept or kept[-1][0] != step_index):
                kept.append(self.frames[-1])
            if len(kept) == len(self.frames):  # steps not on any grid: thin by position instead
                kept = self.frames[1::2] if last else self.frames[::2]
            self.frames = kept

    def __call__(self, step: Step) -> None:
        if self.wants(step):
            self.add(step.step, _to_uint8(step.image), step.step == step.total)

    def steps(self) -> list[int]:
        return [s for s, _ in self.frames]

    def batch(self) -> torch.Tensor:
        """Frames as IMAGE ``[N,H,W,3]`` float in 0..1; a single black pixel if nothing was recorded."""
        if not self.frames:
            return torch.zeros(1, 1, 1, 3)
        return torch.stack([f for _, f in self.frames]).float() / 255.0


class SeriesLog:
    """The named values of a run, step by step, bounded to ``max_points`` by even thinning."""

    def __init__(self, max_points: int = MAX_POINTS):
        self.max_points = max(2, max_points)
        self.stride = 1
        self.steps: list[int] = []
        self.rows: list[dict[str, float]] = []
        self.names: list[str] = []
        self._seen = 0

    def add(self, step: int, values: dict[str, float], last: bool = False) -> None:
        for name in values:
            if name not in self.names:
                self.names.append(name)
        keep = last or self._seen % self.stride == 0
        self._seen += 1
        if not keep:
            return
        if self.steps and self.steps[-1] == step:
            self.rows[-1] = values
            return
        self.steps.append(step)
        self.rows.append(values)
        if len(self.steps) > self.max_points:
            self.stride *= 2
            idx = list(range(0, len(self.steps), 2))
            if last and idx[-1] != len(self.steps) - 1:
                idx.append(len(self.steps) - 1)
            self.steps = [self.steps[i] for i in idx]
            self.rows = [self.rows[i] for i in idx]

    def columns(self, rows: Optional[list[dict[str, float]]] = None) -> dict[str, list[Optional[float]]]:
        rows = self.rows if rows is None else rows
        return {name: [row.get(name) for row in rows] for name in self.names}


def segments(unit: str, size: int, labels: list[str]) -> dict:
    """The ``segment`` of a node that runs ``len(labels)`` optimisations of ``size`` steps one after the other."""
    shown = [str(label)[:MAX_LABEL_CHARS] for label in labels[:MAX_SEGMENT_LABELS]]
    return {"unit": unit, "size": int(size), "labels": shown if len(labels) <= MAX_SEGMENT_LABELS else []}


class RunSeries:
    """The series of one node run as the page draws it (the ``ui`` entry), safe to read from the server's thread
    while the node adds to it."""

    def __init__(self, label: str, total: int, segment: Optional[dict] = None):
        self.label = label
        self.total = total
        self.segment = segment
        self.log = SeriesLog()
        self.complete = False
        self._lock = threading.Lock()

    def add(self, step: int, values: dict[str, float], last: bool) -> None:
        with self._lock:
            self.log.add(step, values, last)
            self.complete = self.complete or last

    def entry(self) -> dict:
        with self._lock:
            entry = {"label": self.label, "total": self.total, "steps": list(self.log.steps),
                     "series": self.log.columns()}
        if self.segment is not None:
            entry["segment"] = self.segment
        return entry


class NodeMonitor:
    """The ``on_step`` callback of one optimizing node run (see the module docstring for what it sends)."""

    def __init__(self, node_id: str | None, total: int, preview_every: int = 5, keep_frames_every: int = 0,
                 label: str = "", clock: Callable[[], float] = time.monotonic, segment: Optional[dict] = None):
        self.node_id = None if node_id is None else str(node_id)
        self.total = total
        self.preview_every = max(1, preview_every)
        self.label = label
        self.segment = segment
        self.clock = clock
        self.prompt_id = comfy.current_prompt_id()
        self.bar = comfy.ProgressBar(total, self.node_id)
        self.recorder = FrameRecorder(keep_frames_every)
        self.series = RunSeries(label, total, segment)
        self.log = self.series.log
        self._last_event: Optional[float] = None
        self._pending_steps: list[int] = []
        self._pending_rows: list[dict[str, float]] = []
        run_series.remember(self.prompt_id, self.node_id, self.series)

    def __call__(self, step: Step) -> None:
        comfy.throw_if_interrupted()
        require_finite_values(step, self.label)
        last = step.step == step.total
        frame = None
        want_preview = step.image is not None and (last or step.step % self.preview_every == 0)
        if want_preview or self.recorder.wants(step):
            frame = _to_uint8(step.image)
        self.bar.update(step.step, step.total, _preview_image(frame) if want_preview else None)
        if step.values:
            values = {name: float(value) for name, value in step.values.items()}
            self.series.add(step.step, values, last)
            self._pending_steps.append(step.step)
            self._pending_rows.append(values)
            now = self.clock()
            if last or self._last_event is None or now - self._last_event >= MIN_EVENT_INTERVAL:
                self._last_event = now
                comfy.send_event(EVENT, self.event_payload(step))
                self._pending_steps, self._pending_rows = [], []
        if frame is not None and self.recorder.wants(step):
            self.recorder.add(step.step, frame, last)

    def event_payload(self, step: Step) -> dict:
        payload = {"node": self.node_id, "prompt_id": self.prompt_id, "label": self.label, "step": step.step,
                   "total": step.total, "series": {name: float(value) for name, value in step.values.items()},
                   "chunk": {"steps": list(self._pending_steps), "series": self.log.columns(self._pending_rows)}}
        if self.segment is not None:
            payload["segment"] = self.segment
        return payload

    def ui(self) -> dict:
        """The whole run's series for the node's ``ui`` output (kept in the history, drawn by the chart)."""
        return {UI_KEY: [self.series.entry()]}

    def frames(self) -> torch.Tensor:
        return self.recorder.batch()


def cancel_and_progress(node_id, total: int = 1, every: int = 1) -> Callable[[Step], None]:
    """The ``on_step`` of a loop with no chart and no preview (loading, scoring, blending): Cancel is honoured at
    every step and the progress bar moves every ``every`` steps and at the last one."""
    bar = comfy.ProgressBar(total, None if node_id is None else str(node_id))

    def on_step(step: Step) -> None:
        comfy.throw_if_interrupted()
        if step.step % every == 0 or step.step == step.total:
            bar.update(step.step, step.total)

    return on_step
