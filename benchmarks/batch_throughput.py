"""Batch-run throughput: the embedded default vs Ray with 1 and 2 CPU workers, side by side in one run.

    python benchmarks/batch_throughput.py                    # toy-world models, 16 prompts, naive method
    python benchmarks/batch_throughput.py --prompts 32 --method augclip --steps 30

Every mode makes the same images (same prompts, settings and run seed) into its own fresh folder, one torch thread
per worker. Ray runs on a local cluster started here (``--cpus`` CPUs, no dashboard), started before the clock
runs; a Ray mode's time includes creating its actors (each loads the models once). Per mode:

- images/hour of wall time, and its ratio to the embedded run;
- worker seconds per image (time inside ``make``, from the manifest) and wall seconds per image;
- Ray's overhead per image = Ray wall per image × workers − the embedded run's wall per image (what an image
  costs a worker beyond making it: actor start and model load spread over the images, scheduling, transfer).

Images are also checked to be byte-identical across modes. The machine is shared: read the ratios, and the
``uptime`` load printed before and after.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fusedream_ops.batch import MethodSpec, read_manifest, run_batch  # noqa: E402
from fusedream_ops.toyworld import measure  # noqa: E402


def load() -> str:
    with open("/proc/loadavg") as f:
        return "load average " + " ".join(f.read().split()[:3])


def run_mode(name: str, prompts: str, out: str, spec: MethodSpec, **kwargs) -> dict:
    start = time.perf_counter()
    summary = run_batch(prompts, out, spec, progress=False, **kwargs)
    wall = time.perf_counter() - start
    rows = read_manifest(summary.manifest)
    assert summary.ok == len(rows), f"{name}: {summary.failed} images failed"
    return {"name": name, "wall": wall, "images": len(rows), "worker_s": sum(r["time"] for r in rows),
            "sha": {r["key"]: r["sha256"] for r in rows}}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--prompts", type=int, default=16, help="toy-world captions (one image each)")
    p.add_argument("--method", default="naive", choices=("naive", "augclip", "fusedream"))
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--cpus", type=int, default=2, help="CPUs of the local Ray cluster")
    p.add_argument("--models", default=measure.FIXTURES)
    args = p.parse_args(argv)
    import ray

    print(f"before: {load()}")
    tmp = tempfile.mkdtemp(prefix="batch-throughput-")
    try:
        prompts = os.path.join(tmp, "captions.txt")
        with open(prompts, "w") as f:
            f.writelines(c + "\n" for c, _ in measure.evaluation_captions(args.prompts))
        spec = MethodSpec(args.method, {"steps": args.steps, "lr": 0.05},
                          {"biggan": os.path.join(args.models, "biggan", "toyworld_biggan"),
                           "clip": os.path.join(args.models, "open_clip", "toyworld_clip.safetensors")})
        start = time.perf_counter()
        ray.init(num_cpus=args.cpus, include_dashboard=False, log_to_driver=False)
        print(f"Ray local cluster start: {time.perf_counter() - start:.1f} s (not counted below)")
        modes = [run_mode("embedded", prompts, os.path.join(tmp, "embedded"), spec, threads=1)]
        for workers in (1, 2):
            modes.append(run_mode(f"Ray, {workers} worker(s)", prompts, os.path.join(tmp, f"ray{workers}"), spec,
                                  ray="auto", workers=workers, cpus_per_worker=1))
        ray.shutdown()
        base = modes[0]
        print(f"{args.prompts} prompts, method {args.method}, {args.steps} steps, toy-world models, 1 thread/worker")
        print("| mode | images/hour | ratio to embedded | wall s/image | worker s/image | Ray overhead s/image |")
        print("|---|---|---|---|---|---|")
        for m, workers in zip(modes, (1, 1, 2)):
            per_image = m["wall"] / m["images"]
            overhead = "—" if m is base else f"{per_image * workers - base['wall'] / base['images']:.3f}"
            print(f"| {m['name']} | {3600 / per_image:.0f} | {base['wall'] / m['wall']:.2f} | {per_image:.3f} | "
                  f"{m['worker_s'] / m['images']:.3f} | {overhead} |")
        identical = all(m["sha"] == base["sha"] for m in modes)
        print(f"images byte-identical across modes: {identical}")
        print(f"after: {load()}")
        return 0 if identical else 1
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
