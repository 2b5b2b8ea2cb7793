"""The batch run + evaluation on the toy world, embedded and on a local 2-worker Ray cluster, and its fault tolerance.

24 captions × 3 methods (naive, AugCLIP, FuseDream) are made in this process and, with the same settings, by the
batch command on a Ray cluster this module starts (2 CPUs, loopback, no dashboard): every PNG must be byte-identical.
The evaluation's CLIP R-precision (graded by the robust toy CLIP, not the one that guided) must order the methods as
``benchmarks/toyworld_claims.py`` finds: FuseDream above both single-start baselines. Then a Ray worker is killed mid-run, and
separately the whole run is killed, and the restarted runs must end with every image exactly once, each identical to
the uninterrupted run's.
"""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from fusedream_pack.fusedream_ops.batch import MethodSpec, read_manifest, run_batch
from fusedream_pack.fusedream_ops.toyworld import measure, world
from testkit import ROOT
from testkit.hang_guard import HANG_S

FIX = measure.FIXTURES
MODELS = {"biggan": os.path.join(FIX, "biggan", "toyworld_biggan"),
          "clip": os.path.join(FIX, "open_clip", "toyworld_clip.safetensors")}
SETTINGS = {"naive": {"steps": 20, "lr": 0.05},
            "augclip": {"steps": 20, "lr": 0.05, "copies": 4},
            "fusedream": {"steps": 20, "lr": 0.05, "copies": 4, "candidates": 64}}
"""Small versions of the claims benchmark's budget (60 steps, M = 256, 16 copies) to fit CI."""
CAPTIONS = 24
FAULT_CAPTIONS = 8
REFERENCE_SCENES = 256
"""More than the judge's 128 features, so the reference covariance is not singular (the 24 generated images are
fewer: their FID is flagged as not comparable with larger samples)."""

pytestmark = [
    pytest.mark.skipif(not os.path.isfile(os.path.join(FIX, "toyworld", "judge.safetensors")),
                       reason="toy-world fixtures not built"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning"),
]
ray = pytest.importorskip("ray")


def _cli_args(method: str) -> list[str]:
    args = ["--method", method, "--models", FIX, "--biggan", "toyworld_biggan", "--clip", "toyworld_clip.safetensors",
            "--threads", "1", "--no-progress"]
    for name, value in SETTINGS[method].items():
        args += [f"--{name.replace('_', '-')}", str(value)]
    return args


def _batch_command(prompts, out, method, *extra) -> list[str]:
    return [sys.executable, "-m", "fusedream_ops.batch", str(prompts), str(out), *_cli_args(method), *extra]


def _env():
    return dict(os.environ, PYTHONPATH=ROOT, RAY_DEDUP_LOGS="0")


@pytest.fixture(scope="module")
def world_files(tmp_path_factory):
    from fusedream_pack.fusedream_ops.core.images import to_pil

    root = tmp_path_factory.mktemp("toyworld")
    captions = [c for c, _ in measure.evaluation_captions(CAPTIONS)]
    (root / "captions.txt").write_text("".join(c + "\n" for c in captions))
    (root / "first.txt").write_text("".join(c + "\n" for c in captions[:FAULT_CAPTIONS]))
    every = [world.object_phrase(k, c) for k in range(world.NUM_CLASSES) for c in range(world.NUM_CELLS)]
    (root / "all_captions.txt").write_text("".join(c + "\n" for c in every))
    scenes = world.sample_scenes(REFERENCE_SCENES, 4242)
    (root / "reference").mkdir()
    for i in range(REFERENCE_SCENES):
        to_pil(scenes.images[i:i + 1]).save(root / "reference" / f"{i:03d}.png")
    return root


class EmbeddedRuns(dict):
    """The uninterrupted in-process runs, made on first use: ``runs[method]`` = its manifest rows by key."""

    def __init__(self, root):
        super().__init__()
        self.root = root

    def __missing__(self, method):
        summary = run_batch(str(self.root / "captions.txt"), str(self.root / "embedded" / method),
                            MethodSpec(method, SETTINGS[method], MODELS), threads=1, progress=False)
        assert summary.ok == CAPTIONS
        self[method] = {r["key"]: r for r in read_manifest(summary.manifest)}
        return self[method]


@pytest.fixture(scope="module")
def embedded_runs(world_files):
    return EmbeddedRuns(world_files)


@pytest.fixture(scope="module")
def ray_address():
    """A local 2-CPU cluster whose workers run at normal priority. Ray nices its workers to 15 by default, so on a
    busy machine they got about 2 % of a core each (load ≈ 15: one method's 24 images took 14 min, not 1)."""
    context = ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                       _system_config={"worker_niceness": 0})
    yield context.address_info["gcs_address"]
    ray.shutdown()


def _descendants(pid: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(ppid, []).append(int(entry))
    out, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            out.append(child)
            todo.append(child)
    return out


def _image_workers(busy: bool = False) -> list[int]:
    """PIDs of the Ray actor processes holding an ImageWorker in the cluster this test process started (``busy``:
    only those making an image now: Ray titles them ``ray::ImageWorker.run`` while the call runs)."""
    pids = []
    for pid in _descendants(os.getpid()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                title = f.read()
        except OSError:
            continue
        if b"ImageWorker" in title and (not busy or b"ImageWorker.run" in title):
            pids.append(pid)
    return pids


def _records(out) -> int:
    """Records the run has committed (a record being written is a ``.tmp-`` file until it is renamed)."""
    folder = os.path.join(out, "records")
    names = os.listdir(folder) if os.path.isdir(folder) else []
    return sum(n.endswith(".json") and not n.startswith(".tmp-") for n in names)


def _wait_for(value, process):
    """The first truthy ``value()``, polled while ``process`` runs: the test waits on the condition, not on a clock
    (a slow machine only makes it wait longer; the limit catches a hang)."""
    deadline = time.monotonic() + HANG_S
    while not (result := value()):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, f"still waiting for {value.__name__} after {HANG_S} s"
        time.sleep(0.02)
    return result


def _assert_complete_and_identical(out, reference: dict, count: int) -> None:
    rows = read_manifest(str(out))
    keys = [r["key"] for r in rows]
    assert len(keys) == len(set(keys)) == count
    for row in rows:
        assert row["status"] == "ok"
        assert row["sha256"] == reference[row["key"]]["sha256"], row["key"]


def test_ray_cluster_makes_byte_identical_images_to_the_embedded_run(world_files, embedded_runs, ray_address):
    for method in SETTINGS:
        out = world_files / "ray" / method
        done = subprocess.run(_batch_command(world_files / "captions.txt", out, method, "--ray", ray_address),
                              cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=HANG_S)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "Ray, 2 worker(s)" in done.stdout
        rows = read_manifest(str(out))
        assert len({r["worker"] for r in rows}) == 2  # both workers made images
        _assert_complete_and_identical(out, embedded_runs[method], CAPTIONS)


def test_clip_r_precision_ranks_fusedream_above_both_baselines_as_the_claims_benchmark(world_files, embedded_runs,
                                                                                       capsys):
    """The claims benchmark's firm result: full FuseDream beats the single-start baselines (judged success 69 % vs
    12 % / 6 %). AugCLIP-only vs naive differ by less than the noise at this size (R-precision −5 … +10 points
    over four runs), so their order is not asserted; FuseDream led the better baseline by 12–42 points.
    The IS assertion replaced ``is_mean >= 1.0`` (true of every IS). Checked: with ``--splits 4`` again (IS ≤ 6)
    it failed (IS 5.1–6.0)."""
    from fusedream_pack.fusedream_ops.evaluation.cli import main

    for method in SETTINGS:
        embedded_runs[method]
    out = world_files / "evaluation.json"
    args = [str(world_files / "embedded" / m) for m in SETTINGS] + [
        "--features", "toyworld", "--judge", os.path.join(FIX, "toyworld", "judge.safetensors"),
        "--reference", str(world_files / "reference"), "--cache-dir", str(world_files / "cache"),
        "--eval-clip", os.path.join(FIX, "open_clip", "toyworld_clip_robust.safetensors"),
        "--distractors", str(world_files / "all_captions.txt"), "--splits", "1", "--json", str(out)]
    assert main(args) == 0
    table = capsys.readouterr().out
    assert "toyworld_clip_robust.safetensors" in table and "not Inception" in table
    result = json.loads(out.read_text())
    by = {r["method"]: r for r in result["runs"]}
    assert all(r["clip_r_precision_candidates"] == 100 and not r["evaluation_clip_is_guidance"] for r in by.values())
    assert all(r["guidance_clip"] == "toyworld_clip.safetensors" for r in by.values())
    best_baseline = max(by["augclip"]["clip_r_precision_mean"], by["naive"]["clip_r_precision_mean"])
    assert by["fusedream"]["clip_r_precision_mean"] > best_baseline
    # 24 captions name 24 different (shape, colour, cell) contents: images that show distinct contents confidently
    # score near 24 (16.5–19.8 here); alike or unreadable images score ~1, and in 4 splits IS could not pass 6.
    assert all(r["is_bound"] == 24 and r["is_mean"] > 12 for r in by.values())
    assert all(r["fid"] > 0 and r["fid_singular"] for r in by.values())  # 24 images, 128 judge features
    assert not result["reference_from_cache"]
    assert main(args[2:]) == 0  # FuseDream alone: the reference statistics now come from the cache
    again = json.loads(out.read_text())
    assert again["reference_from_cache"] and again["runs"][0]["fid"] == pytest.approx(by["fusedream"]["fid"])


def test_a_killed_ray_worker_loses_only_its_images_in_flight(world_files, embedded_runs, ray_address):
    out = world_files / "fault-worker"
    process = subprocess.Popen(_batch_command(world_files / "first.txt", out, "augclip", "--ray", ray_address),
                               cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    def busy_workers_after_the_first_image():
        """Both actors started, one image made, and the actors making an image now (none between two calls)."""
        return _records(out) >= 1 and len(_image_workers()) == 2 and _image_workers(busy=True)

    victim = _wait_for(busy_workers_after_the_first_image, process)[0]  # killed while making an image
    os.kill(victim, signal.SIGKILL)
    assert _records(out) < FAULT_CAPTIONS  # killed mid-run
    stdout, stderr = process.communicate(timeout=HANG_S)
    assert process.returncode == 0, stderr[-3000:]
    _assert_complete_and_identical(out, embedded_runs["augclip"], FAULT_CAPTIONS)


def test_a_killed_run_resumes_where_it_stopped_with_identical_images(world_files, embedded_runs):
    out = world_files / "fault-run"
    command = _batch_command(world_files / "first.txt", out, "augclip")
    process = subprocess.Popen(command, cwd=ROOT, env=_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)

    def two_images_made():
        return _records(out) >= 2

    _wait_for(two_images_made, process)
    process.kill()
    process.wait()
    finished = _records(out)
    assert finished < FAULT_CAPTIONS
    done = subprocess.run(command, cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=HANG_S)
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"{FAULT_CAPTIONS - finished} made now" in done.stdout
    _assert_complete_and_identical(out, embedded_runs["augclip"], FAULT_CAPTIONS)
    with open(out / "run.json") as f:
        assert json.load(f)["method"] == "augclip"


def test_evaluation_on_ray_workers_gives_the_local_numbers(world_files, embedded_runs, ray_address):
    from fusedream_pack.fusedream_ops.evaluation.cli import main

    args = [str(world_files / "embedded" / "fusedream"), "--features", "toyworld",
            "--judge", os.path.join(FIX, "toyworld", "judge.safetensors"),
            "--reference", str(world_files / "reference"), "--cache-dir", str(world_files / "cache-ray"),
            "--eval-clip", os.path.join(FIX, "open_clip", "toyworld_clip_robust.safetensors"),
            "--distractors", str(world_files / "all_captions.txt"), "--splits", "1"]
    embedded_runs["fusedream"]
    assert main(args + ["--json", str(world_files / "local.json")]) == 0
    done = subprocess.run([sys.executable, "-m", "fusedream_ops.evaluation", *args, "--cache-dir",
                           str(world_files / "cache-ray2"), "--ray", ray_address, "--workers", "2",
                           "--json", str(world_files / "ray.json")],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=HANG_S)
    assert done.returncode == 0, done.stderr[-3000:]
    local = json.loads((world_files / "local.json").read_text())["runs"][0]
    remote = json.loads((world_files / "ray.json").read_text())["runs"][0]
    for name in ("is_mean", "fid", "clip_r_precision_mean"):
        assert remote[name] == pytest.approx(local[name], rel=1e-4, abs=1e-4), name
