"""Test-only ComfyUI pack for the end-to-end harness: one node that runs a stand-in op through NodeMonitor.

It loads the FuseDream pack by path (as ``tests/conftest.py`` does) and uses its real ``NodeMonitor`` and
``report``, so the events, previews, interrupt, ``ui`` series and frames output go through ComfyUI's real
server exactly as an optimizing node's do, without models and at a chosen speed. Never shipped with the pack.

The monitor's clock is the steps' nominal time (step i at i × ``step_delay``), so how many events a run sends does
not depend on how busy the machine is; ``wait_for_cancel`` holds the run after its first step until ComfyUI's
interrupt flag is set (a step still running when the user presses Cancel), so a test counts the steps after it.
"""
import importlib.util
import os
import sys
import time

import torch

_PACK = os.path.realpath(os.environ.get("FUSEDREAM_PACK_DIR") or
                         os.path.join(os.path.dirname(os.path.realpath(__file__)), "..", "..", ".."))
_NAME = "fusedream_probe_target"
if _NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(_NAME, os.path.join(_PACK, "__init__.py"),
                                                   submodule_search_locations=[_PACK])
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_NAME] = _module
    _spec.loader.exec_module(_module)

from fusedream_probe_target.fusedream_ops.core.progress import report  # noqa: E402
from fusedream_probe_target.fusedream_ops.core.images import to_image_batch  # noqa: E402
from fusedream_probe_target.nodes.monitor import MONITOR_INPUTS, NodeMonitor  # noqa: E402


HANG_S = 1800


def _wait_until_interrupted() -> None:
    """Poll ComfyUI's interrupt flag (set by Cancel / POST /interrupt) until it is set; HANG_S only catches a hang."""
    import comfy.model_management as mm

    deadline = time.monotonic() + HANG_S
    while not mm.processing_interrupted():
        if time.monotonic() > deadline:
            raise RuntimeError(f"probe: no Cancel within {HANG_S} s")
        time.sleep(0.01)


class FuseDreamProbeMonitor:
    """Fades seeded noise into a colour gradient; reports a rising 'augclip' and a falling 'lpips'."""

    CATEGORY = "FuseDream/testing"
    FUNCTION = "run"
    RETURN_TYPES = ("IMAGE", "IMAGE")
    RETURN_NAMES = ("image", "frames")
    DESCRIPTION = "Test-only: drives NodeMonitor like an optimizer, with no model."

    @classmethod
    def INPUT_TYPES(cls):
        return {
            "required": {
                "steps": ("INT", {"default": 30, "min": 1, "max": 100000, "tooltip": "Steps to run."}),
                "size": ("INT", {"default": 64, "min": 8, "max": 512, "tooltip": "Image side in pixels."}),
                "seed": ("INT", {"default": 0, "min": 0, "max": 2**31 - 1, "control_after_generate": True,
                                 "tooltip": "Seed of the starting noise."}),
                "step_delay": ("FLOAT", {"default": 0.02, "min": 0.0, "max": 5.0, "step": 0.01,
                                         "tooltip": "Seconds each step sleeps (stands in for an optimizer step)."}),
                **MONITOR_INPUTS,
            },
            "optional": {
                "wait_for_cancel": ("BOOLEAN", {"default": False,
                                                "tooltip": "After step 1, wait until Cancel is pressed."}),
            },
            "hidden": {"unique_id": "UNIQUE_ID"},
        }

    def run(self, steps, size, seed, step_delay, preview_every, keep_frames_every, wait_for_cancel=False,
            unique_id=None):
        g = torch.Generator().manual_seed(seed)
        noise = torch.rand(1, 3, size, size, generator=g)
        ramp = torch.linspace(0, 1, size)
        target = torch.stack([ramp[None, :].expand(size, size), ramp[:, None].expand(size, size),
                              torch.full((size, size), 0.5)])[None]
        step = [0]
        monitor = NodeMonitor(unique_id, steps, preview_every, keep_frames_every, label="probe",
                              clock=lambda: step[0] * step_delay)
        image = noise
        for i in range(1, steps + 1):
            step[0] = i
            t = i / steps
            image = (1 - t) * noise + t * target
            values = {"augclip": 0.2 + 0.1 * t + 0.01 * float(torch.rand((), generator=g)), "lpips": 1.0 - 0.8 * t}
            report(monitor, i, steps, values, image)
            if wait_for_cancel and i == 1:
                _wait_until_interrupted()
            if step_delay:
                time.sleep(step_delay)
        return {"ui": monitor.ui(), "result": (to_image_batch(image), monitor.frames())}


NODE_CLASS_MAPPINGS = {"FuseDreamProbe_Monitor": FuseDreamProbeMonitor}
NODE_DISPLAY_NAME_MAPPINGS = {"FuseDreamProbe_Monitor": "FuseDream Probe (monitor test)"}
