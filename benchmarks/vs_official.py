"""The official FuseDream loop against the pack's, side by side in one process (random weights at real sizes).

    python benchmarks/vs_official.py --official PATH [--device cpu|cuda] [--steps 2] [--repeats 2] [--candidates 20]

PATH is a checkout of https://github.com/gnobitab/FuseDream that you fetch yourself (nothing of it is in this
repository). Its own code runs: ``FuseDreamBaseGenerator.optimize_clip_score`` (the optimisation loop, Adam on the
softmax-weighted basis, 50 augmented copies per step) and ``generate_basis`` (top-k init, 10 candidates per
iteration), with its own non-deep BigGAN-256 (``BigGAN_utils/BigGAN.py``, the settings of its ``get_G(256)``).
Three things the checkout does not contain are stood in for, offline: OpenAI's ``clip`` package (open_clip's
ViT-B-32-quickgelu, the same architecture, behind OpenAI's calling convention and, on CUDA, fp16 weights as
``clip.load`` gives), the weights (random; speed does not depend on them) and ``h5py`` (imported by its dataset code,
unused here). The pack runs BigGAN-deep-256 + the same CLIP architecture through ``optimize_basis`` and
``topk_latents``: once with fp32 models, once with ``auto`` precision (see ``fusedream_ops/core/precision.py``).

Every timed loop runs in this process, interleaved side by side over ``--repeats`` rounds; the table gives medians,
FLOPs per step from ``torch.utils.flop_counter.FlopCounterMode`` (one step = a 1-step run minus what the run does
after its step: decoding, and for the pack one re-scoring draw), the achieved GFLOP/s against this machine's matmul
rate (measured before and after the rounds), top-k candidates per second, and peak memory
of each side in its own child process (peak RSS on a CPU, ``torch.cuda.max_memory_allocated`` on CUDA).
"""
from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import types

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from fusedream_ops.models.biggan import BigGANGenerator, fold_spectral_norm  # noqa: E402
from fusedream_ops.models.clip import OPENAI_MEAN, OPENAI_STD, ClipScorer  # noqa: E402
from fusedream_ops.fusedream.latents import sample_latents  # noqa: E402
from fusedream_ops.fusedream.objective import AugClipObjective  # noqa: E402
from fusedream_ops.fusedream.optimize import optimize_basis  # noqa: E402
from fusedream_ops.core.precision import cast_frozen, precision_name, resolve_dtype  # noqa: E402
from fusedream_ops.fusedream.topk import topk_latents  # noqa: E402

PROMPT = "a photo of a blue dog"
CLIP_ARCH = "ViT-B-32-quickgelu"
K = 5


# ---------------------------------------------------------------- the official side
class OpenAIStyleCLIP(nn.Module):
    """An open_clip model behind OpenAI CLIP's call: ``model(image, text)`` → ``(logits_per_image, logits_per_text)``,
    the image cast to the weights' dtype first (as OpenAI's ``encode_image`` does)."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.logit_scale = model.logit_scale

    def forward(self, image, text):
        dtype = self.model.visual.proj.dtype
        image = image.as_subclass(torch.Tensor)  # generate_basis's images inherit BigGAN_utils' Distribution class
        image_features = F.normalize(self.model.encode_image(image.type(dtype)), dim=-1)
        text_features = F.normalize(self.model.encode_text(text), dim=-1)
        logits = self.logit_scale.exp() * image_features @ text_features.t()
        return logits, logits.t()


def openai_clip_standin(device: torch.device) -> types.ModuleType:
    import open_clip

    module = types.ModuleType("clip")

    def load(name, device=device, jit=False):
        model = open_clip.create_model(CLIP_ARCH, pretrained=None).to(device)
        if torch.device(device).type == "cuda":
            model = model.half()  # clip.load converts the weights to fp16 on CUDA
        return OpenAIStyleCLIP(model).eval(), None

    module.load = load
    module.tokenize = lambda texts, context_length=77: open_clip.tokenize(texts, context_length)
    return module


class StepClock:
    """Stands in for ``tqdm`` in the official module: yields the items and records the time of every loop body."""

    def __init__(self):
        self.times: list[float] = []

    def __call__(self, iterable):
        last = time.perf_counter()
        for item in iterable:
            yield item
            now = time.perf_counter()
            self.times.append(now - last)
            last = now


class Official:
    """The official module (imported from the checkout) with its generator object and a random basis."""

    def __init__(self, path: str, device: torch.device):
        sys.path[:0] = [path, os.path.join(path, "BigGAN_utils")]
        sys.modules.setdefault("h5py", types.ModuleType("h5py"))
        sys.modules.setdefault("clip", openai_clip_standin(device))
        real_cuda = torch.Tensor.cuda
        torch.Tensor.cuda = lambda self, *a, **k: self.to(device)  # its module-level mean/std .cuda()
        try:
            import fusedream_utils
        finally:
            torch.Tensor.cuda = real_cuda
        self.module = fusedream_utils
        self.augment_loss = fusedream_utils.AugmentLoss
        self.G, config = self._biggan(device)
        self.generator = fusedream_utils.FuseDreamBaseGenerator(self.G, config, 10)
        rng = torch.Generator().manual_seed(0)
        with torch.no_grad():
            classes = torch.randint(1000, (K,), generator=rng).to(device)
            self.z = [torch.randn(K, self.G.dim_z, generator=rng).clamp(-2, 2).to(device)]
            self.y = [self.G.shared(classes)]

    @staticmethod
    def _biggan(device):
        import BigGAN
        import BigGAN_utils.utils as utils

        config = vars(utils.add_sample_parser(utils.prepare_parser()).parse_args([]))
        config.update(resolution=256, n_classes=1000, G_activation=nn.ReLU(inplace=True),
                      D_activation=nn.ReLU(inplace=True), G_attn="128", D_attn="128", G_ch=96, D_ch=96, hier=True,
                      dim_z=140, shared_dim=128, G_shared=True, skip_init=True, no_optim=True, device=str(device))
        with torch.no_grad():
            return BigGAN.Generator(**config).to(device), config

    def optimize(self, steps: int, copies: int) -> list[float]:
        clock = StepClock()
        self.module.tqdm = clock
        self.module.AugmentLoss = lambda *a, replicate=50, **k: self.augment_loss(*a, replicate=copies, **k)
        self.generator.optimize_clip_score(self.z, self.y, PROMPT, latent_noise=True, augment=True,
                                           opt_iters=steps, optimize_y=True)
        return clock.times

    def topk(self, candidates: int) -> float:
        """Candidates per second of ``generate_basis`` (10 per iteration)."""
        clock = StepClock()
        self.module.tqdm = clock
        self.generator.generate_basis(PROMPT, init_iters=max(1, candidates // 10), num_basis=K)
        return 10 * len(clock.times) / sum(clock.times)


# ---------------------------------------------------------------- the pack's side
class Pack:
    def __init__(self, device: torch.device, precision: str):
        import open_clip

        from fusedream_ops.fixtures.biggan_clip import real_size_biggan

        gan = real_size_biggan(settle_iterations=2)
        fold_spectral_norm(gan)
        clip = open_clip.create_model(CLIP_ARCH, pretrained=None)
        self.generator = BigGANGenerator(gan)
        cast_frozen(self.generator.model, precision, "vae", device).to(device)
        scorer = ClipScorer(cast_frozen(clip, precision, "text_encoder", device).to(device),
                            open_clip.get_tokenizer(CLIP_ARCH), CLIP_ARCH, OPENAI_MEAN, OPENAI_STD)
        self.objective = AugClipObjective(scorer, [(PROMPT, 1.0)])
        self.basis = sample_latents(self.generator, K, seed=0)
        self.device = device

    @property
    def precisions(self) -> str:
        return f"generator {precision_name(self.generator.dtype)}, CLIP {precision_name(self.objective.scorer.dtype)}"

    def optimize(self, steps: int, copies: int, score_draws: int = 4) -> list[float]:
        times, last = [], [time.perf_counter()]

        def tick(_step):
            now = time.perf_counter()
            times.append(now - last[0])
            last[0] = now

        optimize_basis(self.generator, self.basis, self.objective, steps, copies=copies, score_draws=score_draws,
                       on_step=tick)
        return times

    def finish(self, copies: int) -> None:
        """What a run does after its last step: decode the best latent and score it over one draw of views."""
        image = self.generator.decode(self.basis.select(slice(0, 1)))
        self.objective.mean_score(image, 1, 0, copies)

    def topk(self, candidates: int, chunk: int, precision: str | None) -> float:
        latents = sample_latents(self.generator, candidates, seed=1)
        start = time.perf_counter()
        dtypes = {} if precision is None else {
            "generator_dtype": resolve_dtype(precision, self.generator.device, "vae"),
            "scorer_dtype": resolve_dtype(precision, self.generator.device, "text_encoder")}
        topk_latents(self.generator, latents, self.objective, K, chunk, **dtypes)
        return candidates / (time.perf_counter() - start)


# ---------------------------------------------------------------- measurements
def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_rate(device, dtype, n=2048, repeats=5) -> float:
    a, b = torch.randn(n, n, device=device, dtype=dtype), torch.randn(n, n, device=device, dtype=dtype)
    a @ b
    times = []
    for _ in range(repeats):
        sync(device)
        start = time.perf_counter()
        a @ b
        sync(device)
        times.append(time.perf_counter() - start)
    return 2 * n ** 3 / statistics.median(times) / 1e9


def step_flops(run_one_step, run_decode) -> float:
    """FLOPs of one step: a 1-step run (setup is free) minus what it does after the step (``run_decode``: the
    official run decodes the last latent, the pack's also re-scores the best one over one draw of views)."""
    from torch.utils.flop_counter import FlopCounterMode

    counts = []
    for run in (run_one_step, run_decode):
        with FlopCounterMode(display=False) as counter:
            run()
        counts.append(counter.get_total_flops())
    return counts[0] - counts[1]


def child_peak(args, side: str, what: str) -> float:
    """Peak memory (bytes) of ``side`` running ``what`` alone in a child process."""
    command = [sys.executable, os.path.abspath(__file__), "--official", args.official, "--device", args.device,
               "--child", f"{side}:{what}", "--candidates", str(args.candidates)]
    out = subprocess.run(command, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])["peak"]


def run_child(args) -> None:
    side, what = args.child.split(":")
    device = torch.device(args.device)
    model = Official(args.official, device) if side == "official" else Pack(device, "auto")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    if what == "topk":
        if side == "official":
            model.topk(args.candidates)
        else:
            model.topk(args.candidates, 0, "auto")
    else:
        model.optimize(1, 50)
    print(json.dumps({"peak": torch.cuda.max_memory_allocated(device) if device.type == "cuda" else peak_rss()}))


def peak_rss() -> int:
    """This process's peak RSS: ``VmHWM`` (reset by exec; ``ru_maxrss`` keeps the forking parent's size on Linux)."""
    try:
        with open("/proc/self/status", encoding="utf-8") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--official", required=True, help="a checkout of github.com/gnobitab/FuseDream")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=2, help="optimisation steps per timed run")
    parser.add_argument("--repeats", type=int, default=2, help="interleaved rounds")
    parser.add_argument("--copies", type=int, nargs="+", default=[50, 32])
    parser.add_argument("--candidates", type=int, default=20, help="top-k candidates per timed run")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument("--no-memory", action="store_true", help="skip the peak-memory child processes")
    parser.add_argument("--step-memory", action="store_true", help="also measure the optimisation's peak memory")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    official_device = "cuda" if torch.cuda.is_available() else "cpu"
    if torch.device(args.device).type != official_device:
        parser.error(f"the official code runs on {official_device} here; pass --device {official_device}")
    if args.child:
        run_child(args)
        return
    device = torch.device(args.device)
    started = datetime.datetime.now(datetime.timezone.utc)
    print(f"# {started:%Y-%m-%d %H:%M} UTC, {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, device {device}, load {os.getloadavg()}", flush=True)
    rates = {name: matmul_rate(device, dtype) for name, dtype in
             (("fp32", torch.float32), ("bf16", torch.bfloat16)) + ((("fp16", torch.float16),)
                                                                    if device.type == "cuda" else ())}
    print(f"# matmul 2048²: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in rates.items()), flush=True)
    official = Official(args.official, device)
    packs = {"fp32": Pack(device, "fp32"), "auto": Pack(device, "auto")}
    print(f"# pack auto = {packs['auto'].precisions}", flush=True)

    steps = {(side, c): [] for side in ("official", "fp32", "auto") for c in args.copies}
    topk = {side: [] for side in ("official", "fp32 chunk 10", "auto")}
    official.optimize(1, 2)  # warm-up
    for pack in packs.values():
        pack.optimize(1, 2)
    for round_ in range(args.repeats):
        for copies in args.copies:
            steps[("official", copies)] += official.optimize(args.steps, copies)
            for name, pack in packs.items():
                steps[(name, copies)] += pack.optimize(args.steps, copies)
            print(f"# round {round_ + 1}, {copies} copies: " + ", ".join(
                f"{s} {statistics.median(steps[(s, copies)]):.2f} s" for s in ("official", "fp32", "auto")),
                flush=True)
        topk["official"].append(official.topk(args.candidates))
        topk["fp32 chunk 10"].append(packs["fp32"].topk(args.candidates, 10, None))
        topk["auto"].append(packs["fp32"].topk(args.candidates, 0, "auto"))
        print(f"# round {round_ + 1}, top-k candidates/s: " + ", ".join(
            f"{s} {statistics.median(v):.3f}" for s, v in topk.items()), flush=True)

    end_rates = {name: matmul_rate(device, dtype) for name, dtype in
                 (("fp32", torch.float32), ("bf16", torch.bfloat16))}
    print(f"# matmul 2048² after the rounds: " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in end_rates.items()),
          flush=True)
    rates = {name: (rate + end_rates.get(name, rate)) / 2 for name, rate in rates.items()}
    copies = args.copies[0]
    official_decode = lambda: official.G(official.z[0][:1], official.y[0][:1])  # noqa: E731
    flops = {"official": step_flops(lambda: official.optimize(1, copies), official_decode),
             "fp32": step_flops(lambda: packs["fp32"].optimize(1, copies, score_draws=1),
                                lambda: packs["fp32"].finish(copies))}
    flops["auto"] = flops["fp32"]  # the same operations, in bf16 where auto chose it
    print(f"# FLOPs per step: " + ", ".join(f"{k} {v / 1e9:.0f} G" for k, v in flops.items()), flush=True)
    memory = {}
    if not args.no_memory:
        for what in ("topk", "step") if args.step_memory else ("topk",):
            for side in ("official", "pack"):
                memory[(side, what)] = child_peak(args, side, what)
                print(f"# peak memory {side} {what}: {memory[(side, what)] / 1e9:.2f} GB", flush=True)

    med = {key: statistics.median(v) for key, v in steps.items()}
    rows = []
    for c in args.copies:
        rows.append((f"one optimisation step, {c} copies (s)", med[("official", c)], med[("fp32", c)],
                     med[("auto", c)], "{:.2f}"))
    rows.append((f"FLOPs per step, {copies} copies (G)", flops["official"] / 1e9, flops["fp32"] / 1e9,
                 flops["auto"] / 1e9, "{:.0f}"))
    rows.append((f"achieved GFLOP/s, {copies} copies", flops["official"] / 1e9 / med[("official", copies)],
                 flops["fp32"] / 1e9 / med[("fp32", copies)], flops["auto"] / 1e9 / med[("auto", copies)], "{:.0f}"))
    rows.append(("top-k candidates per second (pack fp32: chunks of 10; auto: chunk from memory)",
                 statistics.median(topk["official"]), statistics.median(topk["fp32 chunk 10"]),
                 statistics.median(topk["auto"]), "{:.3f}"))
    for what, label in (("topk", "top-k"), ("step", f"optimisation ({copies} copies)")):
        if (("official", what)) in memory:
            rows.append((f"peak memory, {label} (GB; pack: auto)", memory[("official", what)] / 1e9, float("nan"),
                         memory[("pack", what)] / 1e9, "{:.2f}"))
    print()
    print(f"| measurement | official | pack fp32 | pack auto | fp32 / official | auto / official |")
    print("|---|---|---|---|---|---|")
    for label, off, fp32, auto, fmt in rows:
        cells = [fmt.format(v) if v == v else "—" for v in (off, fp32, auto)]
        ratios = [f"{v / off:.2f}×" if v == v else "—" for v in (fp32, auto)]
        print(f"| {label} | " + " | ".join(cells + ratios) + " |")
    pct = {name: flops[name] / 1e9 / med[(name, copies)] for name in ("fp32", "auto")}
    print(f"\npack fp32 step at {100 * pct['fp32'] / rates['fp32']:.0f} % of the fp32 matmul rate (the mean of its "
          f"measurements before and after the rounds); pack auto at "
          f"{pct['auto']:.0f} GFLOP/s = {100 * pct['auto'] / rates['fp32']:.0f} % of fp32's, "
          f"{100 * pct['auto'] / rates['bf16']:.0f} % of bf16's. Load at the end: {os.getloadavg()}; "
          f"{(datetime.datetime.now(datetime.timezone.utc) - started).total_seconds():.0f} s.")


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        main()
