"""The worker: holds one loaded method and turns jobs into finished images (PNG bytes with metadata).

The same class runs in-process (embedded default) and as a Ray actor: the model loads once in ``__init__``, each
call carries only jobs (prompt, seed) and returns results (PNG bytes, scores), so the process that writes the files
needs no shared filesystem with the workers. A failing job (bad prompt, NaN, out of memory) comes back as a
``failed`` result with its error; it never takes the worker down. ``run`` takes a list of jobs so a method that can
make several prompts per device step plugs in without changing the runners.
"""
from __future__ import annotations

import io
import json
import os
import socket
import time
import traceback
from dataclasses import dataclass, field

import torch
from PIL.PngImagePlugin import PngInfo

from ..core.images import to_pil
from .jobs import Job
from .methods import MethodSpec, load_method

PNG_KEY = "fusedream"
"""PNG text chunk holding the image's JSON record (id, prompt, seed, method, settings, scores)."""


@dataclass
class Outcome:
    key: str
    status: str
    """``ok`` or ``failed``."""
    seconds: float
    device: str
    worker: str
    png: bytes | None = None
    scores: dict = field(default_factory=dict)
    error: str | None = None


def png_bytes(image: torch.Tensor, job: Job, spec: MethodSpec, settings: dict, scores: dict) -> bytes:
    """The image as PNG with the prompt and a JSON record in text chunks (no timings: same inputs, same bytes)."""
    info = PngInfo()
    info.add_text("prompt", job.prompt)
    info.add_text(PNG_KEY, json.dumps({"id": job.id, "prompt": job.prompt, "seed": job.seed, "index": job.index,
                                       "method": spec.method, "settings": settings, "scores": scores},
                                      sort_keys=True))
    buffer = io.BytesIO()
    to_pil(image).save(buffer, format="PNG", pnginfo=info)
    return buffer.getvalue()


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)


class ImageWorker:
    """One model load; ``run(jobs)`` makes their images one after the other. A method that makes several prompts
    per device step would make the whole list at once here; the runners already send lists."""

    def __init__(self, spec: dict, device: str | None = None, threads: int | None = None):
        if threads:
            torch.set_num_threads(int(threads))
        if device is None:
            device = "cuda" if torch.cuda.is_available() else "cpu"
        self.spec = MethodSpec(**spec)
        self.method = load_method(self.spec, device)
        self.device = device_name(self.method.device)
        self.name = f"{socket.gethostname()}:{os.getpid()}"

    def run(self, jobs: list[Job]) -> list[Outcome]:
        return [self._one(job) for job in jobs]

    def _one(self, job: Job) -> Outcome:
        start = time.perf_counter()
        torch.manual_seed(job.seed)  # any op drawing from the global RNG stays tied to this job alone
        try:
            image, scores = self.method.make(job.prompt, job.seed)
            scores = {k: (float(v) if isinstance(v, float) else v) for k, v in scores.items()}
            png = png_bytes(image, job, self.spec, self.method.settings, scores)
        except Exception as exc:  # the job failed, the worker carries on
            detail = "".join(traceback.format_exception_only(type(exc), exc)).strip()
            return Outcome(job.key, "failed", time.perf_counter() - start, self.device, self.name, error=detail)
        return Outcome(job.key, "ok", time.perf_counter() - start, self.device, self.name, png, scores)
