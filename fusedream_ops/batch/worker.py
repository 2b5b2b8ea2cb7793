"""The worker: holds one loaded method and turns jobs into finished images (PNG bytes with metadata).

The same class runs in-process (embedded default) and as a Ray actor: the model loads once in ``__init__``, each
call carries only jobs (prompt, seed) and returns results (PNG bytes, scores), so the process that writes the files
needs no shared filesystem with the workers. A failing job (bad prompt, NaN, out of memory) comes back as a
``failed`` result with its error; it never takes the worker down. After a failure the worker checks its device with
a tiny computation: if that fails too (a sticky CUDA error such as an illegal memory access poisons the process's
context), the result says ``device_lost`` and the worker makes nothing more, so a broken worker cannot fail healthy
jobs quickly; the Ray pool then restarts its process. ``run`` takes a list of jobs so a method that can make several
prompts per device step plugs in without changing the runners.
"""
from __future__ import annotations

import io
import json
import os
import socket
import time
import traceback
import uuid
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
    """``ok``, ``failed``, or ``unrun`` (refused by a worker whose device is lost; not an attempt of the job)."""
    seconds: float
    device: str
    worker: str
    png: bytes | None = None
    scores: dict = field(default_factory=dict)
    error: str | None = None
    device_lost: bool = False
    """The job failed and the worker's device then failed a check too: the worker makes nothing more."""


def _error_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception_only(type(exc), exc)).strip()


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
        self.incarnation = uuid.uuid4().hex
        """Differs after a restart: the runner tells a restarted worker from a briefly unreachable one by it."""
        self.device_error: str | None = None

    def ping(self) -> tuple[str, bool]:
        """``(incarnation, device lost)``: answered once the model is loaded."""
        return self.incarnation, self.device_error is not None

    def check_device(self) -> None:
        """A tiny computation on the worker's device, waited for: raises when the device is in an error state."""
        device = self.method.device
        value = torch.ones(8, device=device).mul(2).sum()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if float(value) != 16.0:
            raise RuntimeError(f"the device {device} computed 2 x 8 ones as {float(value)}")

    def run(self, jobs: list[Job]) -> list[Outcome]:
        return [self._one(job) for job in jobs]

    def _one(self, job: Job) -> Outcome:
        start = time.perf_counter()
        if self.device_error is not None:
            return Outcome(job.key, "unrun", 0.0, self.device, self.name,
                           error=f"not run: the device is in an error state ({self.device_error})")
        torch.manual_seed(job.seed)  # any op drawing from the global RNG stays tied to this job alone
        try:
            image, scores = self.method.make(job.prompt, job.seed)
            scores = {k: (float(v) if isinstance(v, float) else v) for k, v in scores.items()}
            png = png_bytes(image, job, self.spec, self.method.settings, scores)
        except Exception as exc:  # the job failed; the worker carries on if its device still works
            detail = _error_text(exc)
            try:
                self.check_device()
            except Exception as device_exc:
                self.device_error = _error_text(device_exc)
            return Outcome(job.key, "failed", time.perf_counter() - start, self.device, self.name, error=detail,
                           device_lost=self.device_error is not None)
        return Outcome(job.key, "ok", time.perf_counter() - start, self.device, self.name, png, scores)
