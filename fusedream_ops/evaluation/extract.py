"""Images → features, batched on one device or spread over Ray actors (one network load per actor).

A :class:`FeatureWorker` holds the IS/FID feature network and the evaluation CLIP; ``run`` takes a chunk of
images (file paths, or ``(name, PNG/JPEG bytes)`` so Ray workers need no shared filesystem) and returns their
``pool`` and ``logits`` features and L2-normalised CLIP image embeddings ``clip``, in order.

Inception gets each image as decoded, uint8 at its own size, exactly as torchmetrics' FID/IS ``update`` gets it
(torch-fidelity's network resizes to 299² itself, with its TF1-compatible bilinear resize): images are grouped by
size into batches of about ``batch_size`` images' worth of 299² pixels. The toy-world judge takes 32² only:
other sizes are PIL-bicubic resized for it. So every image is decoded whole: :data:`MAX_PIXELS` bounds it (the
manifest and the reference folder are checked against the same bound from the headers, before any network loads).
"""
from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from ..models.clip import load_clip
from ..safety.image_files import read_image
from .features import load_feature_network

MAX_PIXELS = 4096 * 4096
"""Largest image the evaluation decodes (16.8 MP, 50 MB as uint8). It is decoded whole, never shrunk, and COCO
images are at most 640 × 640, generated ones 1024²; the pack's general bound (50 MP) is for images shrunk on
reading."""

BATCH_PIXELS = 299 * 299
"""``batch_size`` counts images of this many pixels: larger ones go in proportionally smaller batches."""


def load_image(source, size: int | None = None) -> torch.Tensor:
    """``[1,3,H,W]`` uint8 from a path or ``(name, encoded bytes)`` (RGB; resized to ``size``² when given)."""
    name, data = source if isinstance(source, tuple) else (source, source)
    rgb = read_image(data, name=name, max_pixels=MAX_PIXELS)
    if size is not None and rgb.size != (size, size):
        rgb = rgb.resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.asarray(rgb, dtype=np.uint8).copy()).movedim(-1, 0)[None]


def size_batches(images: list[torch.Tensor], batch_size: int) -> list[list[int]]:
    """Indices of ``images`` in batches of one size each, at most ``batch_size`` × 299² pixels (at least one)."""
    by_size: dict[tuple, list[int]] = {}
    for i, image in enumerate(images):
        by_size.setdefault(tuple(image.shape[-2:]), []).append(i)
    batches = []
    for (h, w), indices in by_size.items():
        step = max(1, batch_size * BATCH_PIXELS // (h * w))
        batches += [indices[i:i + step] for i in range(0, len(indices), step)]
    return batches


class FeatureWorker:
    def __init__(self, network: str, network_path: str, clip: str | None, clip_arch: str = "auto",
                 device: str | None = None, batch_size: int = 64, threads: int | None = None):
        if threads:
            torch.set_num_threads(int(threads))
        self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        self.network = load_feature_network(network, network_path).to(self.device)
        self.clip = None if clip is None else load_clip(clip_arch, clip)
        if self.clip is not None:
            self.clip.model.to(self.device)
        self.batch_size = batch_size

    def encode_text(self, texts: list[str]) -> torch.Tensor:
        out = [self.clip.encode_text(texts[i:i + 256]).cpu() for i in range(0, len(texts), 256)]
        return torch.cat(out)

    @torch.no_grad()
    def run(self, sources: list, with_clip: bool = True) -> dict[str, torch.Tensor]:
        parts: dict[str, list[torch.Tensor]] = {}
        for start in range(0, len(sources), self.batch_size):
            images = [load_image(s, self.network.input_size) for s in sources[start:start + self.batch_size]]
            out: dict[str, list] = {}
            for batch in size_batches(images, self.batch_size):
                pixels = torch.cat([images[i] for i in batch]).to(self.device)
                features = self.network(pixels)
                if with_clip and self.clip is not None:
                    features["clip"] = self.clip.encode_images(pixels.float() / 255)
                for name, value in features.items():
                    out.setdefault(name, [None] * len(images))
                    for i, row in zip(batch, value.float().cpu()):
                        out[name][i] = row
            for name, rows in out.items():
                parts.setdefault(name, []).append(torch.stack(rows))
        return {name: torch.cat(values) for name, values in parts.items()}


def extract(sources: list, worker_args: dict, with_clip: bool = True, ray: str | None = None,
            workers: int | None = None, chunk: int = 256, local: FeatureWorker | None = None) -> dict:
    """Features of every source, in order: in this process (``local``, or one built from ``worker_args``), or on
    ``workers`` Ray actors (``ray`` = 'auto' or an address) that each get chunks of ``chunk`` images as bytes."""
    if ray is None:
        worker = local or FeatureWorker(**worker_args)
        return worker.run(sources, with_clip)
    from ..batch.pools import connect_ray

    ray_mod = connect_ray(ray, ship_code=False)
    gpus = int(ray_mod.cluster_resources().get("GPU", 0))
    count = workers or max(1, gpus or int(ray_mod.cluster_resources().get("CPU", 1)))
    options = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}
    args = dict(worker_args, device="cuda" if gpus else "cpu", threads=None if gpus else 1)
    actors = [ray_mod.remote(FeatureWorker).options(**options).remote(**args) for _ in range(count)]

    def as_bytes(source):
        if isinstance(source, tuple):
            return source
        with open(source, "rb") as f:
            return source, f.read()

    chunks = [sources[i:i + chunk] for i in range(0, len(sources), chunk)]
    results: list = [None] * len(chunks)
    running: dict = {}
    for index, part in enumerate(chunks):  # at most two chunks per actor in the object store at a time
        if len(running) >= 2 * count:
            done, _ = ray_mod.wait(list(running), num_returns=1)
            results[running.pop(done[0])] = ray_mod.get(done[0])
        running[actors[index % count].run.remote([as_bytes(s) for s in part], with_clip)] = index
    for future, index in running.items():
        results[index] = ray_mod.get(future)
    for actor in actors:
        ray_mod.kill(actor)
    return {name: torch.cat([r[name] for r in results]) for name in results[0]}
