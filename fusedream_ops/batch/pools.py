"""Where jobs run: in this process (the embedded default) or on Ray actors.

A pool is made before the run folder is touched (so a cluster that cannot hold the workers is refused up front),
loads its models in ``start()``, takes jobs with ``submit`` while ``free()`` > 0 and hands back finished
``(job, outcome)`` pairs from ``wait``. An outcome of None means the job was not the cause of what happened to it
(its worker was briefly unreachable, or could not start): the runner queues it again without counting an attempt.
A worker that dies while making an image is that image's failed attempt, so a prompt that always kills its worker
stops after ``attempts`` tries instead of using up every worker.

Ray actors run one job at a time, so a death is always the one job's. Ray restarts a dead actor (its model loads
again); a worker that dies :data:`WORKER_RESTARTS` times in a row without making an image in between is given up,
and the run fails only when no worker is left. A worker whose device is lost (a sticky CUDA error) is restarted the
same way, and makes nothing until then.
"""
from __future__ import annotations

import os
from collections import deque
from dataclasses import dataclass

from ..core.errors import FuseDreamError, require
from .jobs import Job
from .worker import ImageWorker, Outcome

WORKER_RESTARTS = 3
"""Deaths in a row (no image made in between) after which a Ray worker is given up."""
DIED = ("the worker process died while making this image (killed, out of memory, or a crash in native code; see "
        "the Ray logs)")


class EmbeddedPool:
    """One worker in this process, one job at a time. A lost device cannot be recovered in this process: the run
    stops, and rerunning the command resumes it."""

    def __init__(self, spec: dict, device: str | None, threads: int | None):
        self.spec, self.device, self.threads = spec, device, threads
        self.worker: ImageWorker | None = None
        self.queue: deque[Job] = deque()
        self.lost: str | None = None
        self.description = "embedded"

    def start(self) -> None:
        self.worker = ImageWorker(self.spec, self.device, self.threads)
        self.description = f"embedded on {self.worker.device}"

    def free(self) -> int:
        if self.lost:
            raise FuseDreamError(self.lost)
        return 1 - len(self.queue)

    def submit(self, jobs: list[Job]) -> None:
        self.queue.extend(jobs)

    def wait(self) -> list[tuple[Job, Outcome | None]]:
        job = self.queue.popleft()
        (outcome,) = self.worker.run([job])
        if outcome.device_lost:
            self.lost = (f"the device {self.worker.device} is in an error state after image {job.key} "
                         f"({self.worker.device_error}); this process cannot recover it. Run the same command again "
                         f"to resume in a new process.")
        return [(job, outcome)]

    def close(self) -> None:
        pass


def connect_ray(address: str, ship_code: bool):
    """``auto``: this machine's running cluster if there is one, else a new local one; otherwise an address
    (``host:port`` or ``ray://…``). ``ship_code`` sends this ``fusedream_ops`` to every worker (Ray
    ``runtime_env`` ``py_modules``), for clusters whose nodes do not have the package installed."""
    try:
        import ray
    except ImportError:
        raise FuseDreamError("--ray needs Ray: pip install 'fusedream-nodes[ray]' (or pip install ray).") from None
    if not ray.is_initialized():
        package = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        runtime_env = {"py_modules": [package]} if ship_code else None
        ray.init(address=None if address == "auto" else address, runtime_env=runtime_env, log_to_driver=False)
    return ray


@dataclass
class _Slot:
    """One Ray actor and what the driver knows of it."""

    actor: object
    incarnation: str | None = None
    """The worker process last heard from (:meth:`ImageWorker.ping`); None until it answers."""
    job: Job | None = None
    """The job in flight on it (one at a time, so a death is this job's)."""
    probing: bool = False
    deaths: int = 0
    """Deaths in a row, without an image made since."""
    gone: str | None = None
    """Why it was given up."""

    def ready(self) -> bool:
        return self.gone is None and self.incarnation is not None and self.job is None and not self.probing


def _last_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return lines[-1] if lines else type(exc).__name__


def plan_workers(resources: dict, workers: int | None, cpus_per_worker: int, device: str | None):
    """``(count, actor options, device, threads)`` for the cluster's ``resources``; refuses, before anything
    starts, workers the cluster cannot hold (Ray would keep them pending forever)."""
    gpus, cpus = int(resources.get("GPU", 0)), int(resources.get("CPU", 0))
    require(device in (None, "cpu", "cuda"), f"on Ray, --device is cpu or cuda (each worker gets a GPU of its own), "
                                             f"got '{device}'.")
    require(workers is None or workers >= 1, f"--workers must be at least 1, got {workers}.")
    require(cpus_per_worker >= 1, f"--cpus-per-worker must be at least 1, got {cpus_per_worker}.")
    if device == "cuda" or (device is None and gpus):
        require(gpus >= 1, f"--device cuda asks for GPU workers, but the Ray cluster has no GPU ({cpus} CPUs); "
                           f"use --device cpu, or a cluster with GPUs.")
        count = workers or gpus
        require(count <= gpus, f"--workers {count} asks for {count} GPU workers (one GPU each), but the Ray cluster "
                               f"has {gpus} GPU(s), so {count - gpus} would wait forever; give --workers {gpus} or "
                               f"fewer.")
        options, device, threads = {"num_gpus": 1, "num_cpus": 1}, "cuda", None
    else:
        count = workers or max(1, cpus // cpus_per_worker)
        options, device, threads = {"num_cpus": cpus_per_worker}, "cpu", cpus_per_worker
    require(count * options["num_cpus"] <= cpus,
            f"{count} worker(s) x {options['num_cpus']} CPU(s) need {count * options['num_cpus']} CPUs, but the Ray "
            f"cluster has {cpus}, so some would wait forever; give fewer --workers (or --cpus-per-worker).")
    return count, options, device, threads


class RayPool:
    """``workers`` Ray actors, each loading the model once: one GPU each where the cluster has GPUs (or
    ``device="cuda"``), otherwise ``cpus_per_worker`` CPUs each (and as many torch threads)."""

    def __init__(self, spec: dict, address: str, workers: int | None, cpus_per_worker: int, ship_code: bool,
                 device: str | None = None):
        self.ray = connect_ray(address, ship_code)
        self.spec = spec
        self.count, self.options, self.device, self.threads = plan_workers(
            self.ray.cluster_resources(), workers, cpus_per_worker, device)
        self.slots: list[_Slot] = []
        self.running: dict = {}
        """Call in flight -> (its slot, whether it is a ping)."""
        self.description = (f"Ray, {self.count} worker(s) with " +
                            ("one GPU each" if self.device == "cuda" else f"{cpus_per_worker} CPU(s) each"))

    def start(self) -> None:
        actor = self.ray.remote(ImageWorker).options(max_restarts=-1, max_task_retries=0, **self.options)
        self.slots = [_Slot(actor.remote(self.spec, self.device, self.threads)) for _ in range(self.count)]
        for slot in self.slots:
            self._ping(slot)

    def free(self) -> int:
        if all(slot.gone for slot in self.slots):
            reasons = "; ".join(sorted({slot.gone for slot in self.slots}))
            raise FuseDreamError(f"no Ray worker is left ({reasons}); see the Ray logs.")
        return sum(slot.ready() for slot in self.slots)

    def submit(self, jobs: list[Job]) -> None:
        (job,) = jobs
        slot = next(slot for slot in self.slots if slot.ready())
        slot.job = job
        self.running[slot.actor.run.remote([job])] = (slot, False)

    def _ping(self, slot: _Slot) -> None:
        slot.probing = True
        self.running[slot.actor.ping.remote()] = (slot, True)

    def wait(self) -> list[tuple[Job, Outcome | None]]:
        ready, _ = self.ray.wait(list(self.running), num_returns=1)
        slot, is_ping = self.running.pop(ready[0])
        try:
            value = self.ray.get(ready[0])
        except self.ray.exceptions.ActorUnavailableError:  # restarting, or briefly unreachable: ask who answers
            self._ping(slot)
            return []
        except self.ray.exceptions.RayActorError as exc:  # gone for good (its constructor failed, or given up)
            blame = not (getattr(exc, "actor_init_failed", False) or getattr(exc, "preempted", False))
            return self._give_up(slot, _last_line(exc), blame)
        if is_ping:
            return self._answered(slot, *value)
        (outcome,) = value
        job, slot.job = slot.job, None
        if outcome.status == "ok":
            slot.deaths = 0
        if outcome.device_lost:  # a new process gets a working device
            self._restart(slot)
        return [(job, None if outcome.status == "unrun" else outcome)]

    def _answered(self, slot: _Slot, incarnation: str, device_lost: bool) -> list:
        """A ping came back: the same process (it was only unreachable: its job is queued again, not counted), or
        a new one (the old one died with its job: that job's failed attempt)."""
        if device_lost:  # the old process, still answering before the restart reaches it
            self._ping(slot)
            return []
        restarted = slot.incarnation is not None and incarnation != slot.incarnation
        slot.incarnation, slot.probing = incarnation, False
        job, slot.job = slot.job, None
        if not restarted:
            return [] if job is None else [(job, None)]
        slot.deaths += 1
        if slot.deaths > WORKER_RESTARTS:
            self._give_up(slot, f"it died {slot.deaths} times in a row", blame=False)
        return [] if job is None else [(job, Outcome(job.key, "failed", 0.0, "unknown", "lost", error=DIED))]

    def _restart(self, slot: _Slot) -> None:
        """Kill the worker's process; Ray starts a new one (the model loads again) unless it died too often."""
        slot.deaths += 1
        if slot.deaths > WORKER_RESTARTS:
            self._give_up(slot, f"its device failed {slot.deaths} times in a row", blame=False)
            return
        slot.incarnation = None  # whoever answers next is the new process, not another death
        self.ray.kill(slot.actor, no_restart=False)
        self._ping(slot)

    def _give_up(self, slot: _Slot, reason: str, blame: bool) -> list:
        """Stop using a worker; its job in flight is a failed attempt when ``blame``, else queued again."""
        slot.gone = reason
        self.ray.kill(slot.actor, no_restart=True)
        job, slot.job = slot.job, None
        if job is None:
            return []
        lost = Outcome(job.key, "failed", 0.0, "unknown", "lost", error=f"{DIED}: {reason}")
        return [(job, lost if blame else None)]

    def close(self) -> None:
        for slot in self.slots:
            self.ray.kill(slot.actor)
