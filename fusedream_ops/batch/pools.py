"""Where jobs run: in this process (the embedded default) or on Ray actors.

A pool takes jobs with ``submit`` while ``free()`` > 0 and hands back finished ``(job, outcome)`` pairs from
``wait``; an outcome of None means the worker died with the job in flight for good (the runner queues the job
again, not counted as an attempt of its prompt). A Ray actor that dies is restarted by Ray (its model loads again)
and its calls in flight are retried on it (jobs are idempotent: same seed, same bytes), up to
:data:`WORKER_RESTARTS` times; after that its jobs come back as None and it gets no more.
"""
from __future__ import annotations

import os
from collections import deque

from ..core.errors import FuseDreamError, require
from .jobs import Job
from .worker import ImageWorker, Outcome

IN_FLIGHT_PER_WORKER = 2
"""Jobs queued per Ray actor: one running, one waiting, so a worker never idles on the driver's round trip."""
WORKER_RESTARTS = 3
"""Restarts of a Ray worker (and retries of its calls); beyond that it is dropped. The run fails only when no
worker is left."""


class EmbeddedPool:
    """One worker in this process, one job at a time."""

    def __init__(self, spec: dict, device: str | None, threads: int | None):
        self.worker = ImageWorker(spec, device, threads)
        self.queue: deque[Job] = deque()
        self.description = f"embedded on {self.worker.device}"

    def free(self) -> int:
        return 1 - len(self.queue)

    def submit(self, jobs: list[Job]) -> None:
        self.queue.extend(jobs)

    def wait(self) -> list[tuple[Job, Outcome | None]]:
        job = self.queue.popleft()
        return list(zip([job], self.worker.run([job])))

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


class RayPool:
    """``workers`` Ray actors, each loading the model once: one GPU each where the cluster has GPUs, otherwise
    ``cpus_per_worker`` CPUs each (and as many torch threads)."""

    def __init__(self, spec: dict, address: str, workers: int | None, cpus_per_worker: int, ship_code: bool):
        ray = connect_ray(address, ship_code)
        self.ray = ray
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        if gpus:
            options = {"num_gpus": 1, "num_cpus": 1}
            count = workers or gpus
            device, threads = "cuda", None
        else:
            require(cpus_per_worker >= 1, f"cpus per worker must be at least 1, got {cpus_per_worker}.")
            options = {"num_cpus": cpus_per_worker}
            count = workers or max(1, int(resources.get("CPU", 1)) // cpus_per_worker)
            device, threads = "cpu", cpus_per_worker
        require(count >= 1, f"workers must be at least 1, got {count}.")
        actor = ray.remote(ImageWorker).options(max_restarts=WORKER_RESTARTS, max_task_retries=WORKER_RESTARTS,
                                                **options)
        self.actors = [actor.remote(spec, device, threads) for _ in range(count)]
        self.alive = set(range(count))
        self.running: dict = {}
        self.description = (f"Ray, {count} worker(s) with " +
                            ("one GPU each" if gpus else f"{cpus_per_worker} CPU(s) each"))

    def _load(self, index: int) -> int:
        return sum(1 for a, _ in self.running.values() if a == index)

    def free(self) -> int:
        if not self.alive:
            raise FuseDreamError(f"every Ray worker died more than {WORKER_RESTARTS} times; see the Ray logs "
                                 f"(out of memory? a node lost?).")
        return sum(IN_FLIGHT_PER_WORKER - self._load(i) for i in self.alive)

    def submit(self, jobs: list[Job]) -> None:
        index = min(sorted(self.alive), key=self._load)
        self.running[self.actors[index].run.remote(jobs)] = (index, jobs)

    def wait(self) -> list[tuple[Job, Outcome | None]]:
        ready, _ = self.ray.wait(list(self.running), num_returns=1)
        index, jobs = self.running.pop(ready[0])
        try:
            outcomes = self.ray.get(ready[0])
        except self.ray.exceptions.RayActorError:  # Ray gave up restarting it
            self.alive.discard(index)
            return [(job, None) for job in jobs]
        return list(zip(jobs, outcomes))

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
