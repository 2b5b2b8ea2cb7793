"""Images → features, batched on one device or spread over Ray actors (one network load per actor).

A :class:`FeatureWorker` holds the IS/FID feature network and the evaluation CLIP; ``run`` takes a chunk of
images (file paths, or PNG/JPEG bytes so Ray workers need no shared filesystem) and returns their ``pool`` and
``logits`` features and L2-normalised CLIP image embeddings ``clip``. Images are resized to the feature network's
input size (Inception: 299², bicubic) before batching, so folders of mixed sizes batch fine.
"""
from __future__ import annotations

import io

import torch
from PIL import Image

from ..core.images import from_pil
from ..models.clip import load_clip
from .features import load_feature_network


def load_image(source, size: int) -> torch.Tensor:
    """``[1,3,size,size]`` in 0..1 from a path or encoded bytes (RGB, bicubic resize when the size differs)."""
    with Image.open(io.BytesIO(source) if isinstance(source, bytes) else source) as img:
        img = img.convert("RGB")
        return from_pil(img, None if img.size == (size, size) else size)


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
            images = torch.cat([load_image(s, self.network.image_size) for s in sources[start:start + self.batch_size]])
            images = images.to(self.device)
            out = self.network(images)
            if with_clip and self.clip is not None:
                out["clip"] = self.clip.encode_images(images)
            for name, value in out.items():
                parts.setdefault(name, []).append(value.float().cpu())
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
        if isinstance(source, bytes):
            return source
        with open(source, "rb") as f:
            return f.read()

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
