"""The batch run's fault tolerance on a local Ray cluster this module starts (2 CPUs, loopback, no dashboard).

Workers the cluster cannot hold are refused before anything starts; a prompt that kills its worker fails after its
attempts; a worker Ray restarts under a job (ActorUnavailableError, as for a briefly unreachable one) is kept; a
worker whose device is lost is restarted before it can fail healthy jobs. The faults are Ray's own (an actor
process exiting, ``ray.kill`` with restart) on real workers with tiny real models (``fixtures.faulty_workers``).
Nothing waits on time: the run waits on Ray's results.

The pack is imported as ``fusedream_ops`` here (not ``fusedream_pack``) so the Ray worker processes, which get the
repository on their PYTHONPATH, can load the worker classes by name.
"""
import os
import sys

import pytest

ray = pytest.importorskip("ray")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from fusedream_ops.batch import MethodSpec, PromptItem, pools, read_manifest, run_batch  # noqa: E402
from fusedream_ops.core.errors import FuseDreamError  # noqa: E402
from fusedream_ops.fixtures.faulty_workers import BREAK, CRASH, CrashingWorker, StickyDeviceWorker  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def ray_address():
    path = os.environ.get("PYTHONPATH")
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (ROOT, path) if p)  # the cluster's processes inherit it
    context = ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1", log_to_driver=False,
                       _system_config={"worker_niceness": 0})  # Ray nices workers to 15: ~2 % of a busy core
    yield context.address_info["gcs_address"]
    ray.shutdown()
    if path is None:
        os.environ.pop("PYTHONPATH")
    else:
        os.environ["PYTHONPATH"] = path


@pytest.fixture
def spec(tiny_models):
    return MethodSpec("naive", {"steps": 1}, {"biggan": os.path.join(tiny_models, "biggan", "biggan-deep-256"),
                                             "clip": os.path.join(tiny_models, "open_clip", "ViT-B-32.safetensors")})


def _rows(out) -> dict:
    return {r["id"]: r for r in read_manifest(str(out))}


def test_workers_the_cluster_cannot_hold_are_refused_before_the_folder_is_touched(ray_address, spec, tmp_path):
    """GPU workers on this CPU-only cluster, and more workers than its CPUs, would stay pending forever. Seen
    failing with the checks of ``plan_workers`` removed: the run wrote its folder and ended "no Ray worker is left"
    (before the fix, ``device`` was ignored on Ray and ``--workers 3`` left a third actor pending)."""
    out = tmp_path / "run"
    items = [PromptItem("p", "a red bus")]
    with pytest.raises(FuseDreamError, match=r"asks for GPU workers, but the Ray cluster has no GPU \(2 CPUs\)"):
        run_batch(items, str(out), spec, ray=ray_address, device="cuda", progress=False)
    with pytest.raises(FuseDreamError, match="3 worker.* need 3 CPUs, but the Ray cluster has 2, so some would wait"):
        run_batch(items, str(out), spec, ray=ray_address, workers=3, progress=False)
    assert not out.exists()


def test_a_prompt_that_kills_its_worker_fails_after_its_attempts_and_the_rest_finish(ray_address, spec, tmp_path,
                                                                                       monkeypatch):
    """Each death of its worker is one attempt of the prompt that was running. Seen failing with a death handed
    back as None (queued again, not counted): the prompt killed worker after worker until "no Ray worker is left"."""
    monkeypatch.setattr(pools, "ImageWorker", CrashingWorker)
    out = tmp_path / "run"
    items = [PromptItem("bad", f"a red bus, {CRASH}"), PromptItem("g1", "a blue dog"), PromptItem("g2", "a cat")]
    summary = run_batch(items, str(out), spec, ray=ray_address, workers=2, attempts=2, progress=False)
    assert (summary.ok, summary.failed) == (2, 1)
    rows = _rows(out)
    assert rows["bad"]["attempts"] == 2 and "worker process died" in rows["bad"]["error"]
    assert rows["g1"]["attempts"] == rows["g2"]["attempts"] == 1


def test_a_worker_ray_restarts_under_a_job_is_kept(ray_address, spec, tmp_path, monkeypatch):
    """One worker, killed under the first prompt: Ray restarts it and answers the call with ActorUnavailableError
    (as for an actor that is only unreachable for a while); the pool asks who answers now and keeps the worker,
    which makes the second prompt. Seen failing with ActorUnavailableError treated as a death for good
    (``_give_up``): "no Ray worker is left"."""
    monkeypatch.setattr(pools, "ImageWorker", CrashingWorker)
    out = tmp_path / "run"
    items = [PromptItem("bad", f"a red bus, {CRASH}"), PromptItem("good", "a blue dog")]
    summary = run_batch(items, str(out), spec, ray=ray_address, workers=1, attempts=1, progress=False)
    assert (summary.ok, summary.failed) == (1, 1)
    assert _rows(out)["good"]["status"] == "ok"


def test_a_worker_whose_device_is_lost_is_restarted_before_it_fails_healthy_jobs(ray_address, spec, tmp_path,
                                                                                   monkeypatch):
    """After the first prompt the worker's device raises a CUDA-like sticky error on every use, its own device check
    included; the worker reports the device lost and the pool restarts its process, which makes the rest. Seen
    failing with ``check_device`` no longer called by ``ImageWorker._one``: both healthy prompts failed with the
    illegal memory access."""
    monkeypatch.setattr(pools, "ImageWorker", StickyDeviceWorker)
    out = tmp_path / "run"
    items = [PromptItem("bad", f"a red bus, {BREAK}"), PromptItem("g1", "a blue dog"), PromptItem("g2", "a cat")]
    summary = run_batch(items, str(out), spec, ray=ray_address, workers=1, attempts=1, progress=False)
    rows = _rows(out)
    assert (summary.ok, summary.failed) == (2, 1), rows
    assert "illegal memory access" in rows["bad"]["error"]
    assert rows["g1"]["attempts"] == rows["g2"]["attempts"] == 1
    assert rows["g1"]["worker"] != rows["bad"]["worker"]  # a new process
