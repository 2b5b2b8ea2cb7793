"""Everything an optimizing node shows while it runs, as one ``on_step`` callback.

Per step: the interrupt check (Cancel stops within one step), the progress bar, a JPEG preview every
``preview_every`` steps, a rate-limited ``fusedream.progress`` websocket event with the named series, frames
kept every ``frames_every`` steps. After the run: the whole series for the node's ``ui`` output (so the chart
is in the history) and the frames as an IMAGE batch.

Event ``fusedream.progress`` payload (documented in the README)::

    {"node": "<node id>", "step": 12, "total": 1000, "series": {"augclip": 0.31, ...}}
"""
from __future__ import annotations

import time

import torch

from ..fusedream_ops.images import to_image_batch, to_pil
from ..fusedream_ops.progress import Step
from . import comfy

EVENT = "fusedream.progress"
MIN_EVENT_INTERVAL = 0.1  # seconds between two events of one node; the last step is always sent

MONITOR_INPUTS = {
    "preview_every": ("INT", {"default": 5, "min": 1, "max": 1000, "advanced": True,
                              "tooltip": "Send a live preview of the current image every N steps."}),
    "keep_frames_every": ("INT", {"default": 0, "min": 0, "max": 10000,
                                  "tooltip": "Keep the current image every N steps (plus the final one) as the "
                                             "'frames' output, e.g. for Save Animated WEBP. 0 keeps only the final "
                                             "frame."}),
}
MAX_FRAMES = 256


class FrameRecorder:
    """Keeps one image every ``every`` steps plus the final one, never more than ``max_frames``.

    When full it drops every other kept frame and doubles its interval, so memory stays bounded while the
    frames still span the whole run evenly.
    """

    def __init__(self, every: int, max_frames: int = MAX_FRAMES):
        self.every = every
        self.max_frames = max_frames
        self.frames: list[tuple[int, torch.Tensor]] = []

    def __call__(self, step: Step) -> None:
        if step.image is None:
            return
        last = step.step == step.total
        if not last and (self.every <= 0 or step.step % self.every):
            return
        self.frames.append((step.step, step.image[:1].detach().float().cpu().clone()))
        if len(self.frames) > self.max_frames:
            final = self.frames[-1] if last else None
            self.every *= 2
            self.frames = [f for f in self.frames if f[0] % self.every == 0]
            if final is not None and self.frames[-1] is not final:
                self.frames.append(final)

    def batch(self) -> torch.Tensor:
        """Frames as IMAGE ``[N,H,W,3]``; a single black pixel if nothing was recorded."""
        if not self.frames:
            return torch.zeros(1, 1, 1, 3)
        return to_image_batch(torch.cat([f for _, f in self.frames]))


class NodeMonitor:
    def __init__(self, node_id: str | None, total: int, preview_every: int = 5, keep_frames_every: int = 0,
                 label: str = ""):
        self.node_id = None if node_id is None else str(node_id)
        self.total = total
        self.preview_every = max(1, preview_every)
        self.label = label
        self.bar = comfy.ProgressBar(total, self.node_id)
        self.recorder = FrameRecorder(keep_frames_every)
        self.series: dict[str, list[float]] = {}
        self.steps: list[int] = []
        self._last_event = 0.0
        self._pending = False

    def __call__(self, step: Step) -> None:
        comfy.throw_if_interrupted()
        last = step.step == step.total
        preview = None
        if step.image is not None and (last or step.step % self.preview_every == 0):
            preview = to_pil(step.image)
        self.bar.update(step.step, step.total, preview)
        if step.values:
            self.steps.append(step.step)
            for name, value in step.values.items():
                self.series.setdefault(name, []).append(float(value))
            now = time.monotonic()
            if last or now - self._last_event >= MIN_EVENT_INTERVAL:
                self._last_event = now
                comfy.send_event(EVENT, self.event_payload(step))
        self.recorder(step)

    def event_payload(self, step: Step) -> dict:
        return {"node": self.node_id, "label": self.label, "step": step.step, "total": step.total,
                "series": {k: float(v) for k, v in step.values.items()}}

    def ui(self) -> dict:
        """The whole run's series for the node's ``ui`` output (kept in the history, drawn by the chart)."""
        return {"fusedream_series": [{"label": self.label, "steps": self.steps, "series": self.series}]}

    def frames(self) -> torch.Tensor:
        return self.recorder.batch()
