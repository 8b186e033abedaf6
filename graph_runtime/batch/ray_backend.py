"""Spread a batch over a Ray cluster: one actor per GPU (or CPU), each holding one Executor.

An actor loads its runtime once (the Executor, its services such as the model store, and its cache) and
runs jobs one at a time, so the model loads once per actor and a seed sweep re-runs only the sampler
onward on each actor. The actor writes a job's files into a scratch folder of its own and sends them back
with the result; the driver writes them into the output folder, so the workers need no shared filesystem.

Ray is optional (``pip install graph-runtime[ray]``) and imported only here, only when a Ray batch starts.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import socket
import tempfile
from collections import deque
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from ..paths import RuntimePaths
from ..validation import ValidationResult
from .runner import LocalBackend, Outcome, RegistryFactory, WorkItem

# No dashboard, no usage reporting: a batch run talks to nobody but its own cluster.
RAY_ENV = {"RAY_USAGE_STATS_ENABLED": "0", "RAY_DISABLE_DOCKER_CPU_WARNING": "1"}


def _check_reachable(address: str | None) -> None:
    """Fail fast on a cluster address nobody answers at (Ray itself keeps retrying for minutes)."""
    if not address or address in ("auto", "local"):
        return
    hostport = address.split("://", 1)[-1].rstrip("/")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=5).close()
    except OSError as exc:
        raise RuntimeError(f"no Ray cluster answers at {address}: {exc}") from None


class BatchWorker:
    """The actor body (wrapped by ``ray.remote`` when the batch starts)."""

    def __init__(self, registry_factory: RegistryFactory | None, cache: str | None, paths: RuntimePaths | None):
        self.scratch = Path(tempfile.mkdtemp(prefix="graph-runtime-batch-"))
        self.local = LocalBackend(registry_factory, cache=cache, paths=paths)
        self.opened = False
        self.name = f"ray:{socket.gethostname()}:{os.getpid()}"

    def run(self, item: WorkItem) -> Outcome:
        if not self.opened:
            self.local.open(item.document)
            self.opened = True
        job_dir = self.scratch / item.job.id
        outcome = self.local.run_one(dataclasses.replace(item, job_dir=job_dir))
        blobs = []
        if job_dir.is_dir():
            for path in sorted(p for p in job_dir.rglob("*") if p.is_file()):
                blobs.append((path.relative_to(job_dir).as_posix(), path.read_bytes()))
            shutil.rmtree(job_dir, ignore_errors=True)
        outcome.blobs = blobs
        outcome.worker = self.name
        return outcome

    def close(self) -> None:
        shutil.rmtree(self.scratch, ignore_errors=True)


class RayBackend:
    """Jobs dispatched in order to whichever actor is free; each actor has at most ``depth`` jobs queued."""

    name = "ray"

    def __init__(self, address: str | None = None, registry_factory: RegistryFactory | None = None, *,
                 workers: int | None = None, cache: str | None = None, paths: RuntimePaths | None = None,
                 init_kwargs: dict[str, Any] | None = None, depth: int = 2):
        self.address = address or None
        self.registry_factory = registry_factory
        self.workers = workers
        self.cache = cache
        self.paths = paths
        self.init_kwargs = init_kwargs or {}
        self.depth = max(1, depth)
        self.actors: list[Any] = []
        self._started_ray = False
        self._stop = False
        self._validator = LocalBackend(registry_factory)

    def open(self, document: dict, *, dry_run: bool = False) -> None:
        self._validator.open(document)
        if dry_run:
            return
        for key, value in RAY_ENV.items():
            os.environ.setdefault(key, value)
        try:
            import ray
        except ImportError:
            raise RuntimeError('Ray is not installed: pip install "graph-runtime[ray]"') from None

        if not ray.is_initialized():
            _check_reachable(self.address)
            kwargs = {"include_dashboard": False, "logging_level": "WARNING", "log_to_driver": False,
                      **self.init_kwargs}
            ray.init(address=self.address, **kwargs)
            self._started_ray = True
        resources = ray.cluster_resources()
        gpus = int(resources.get("GPU", 0))
        count = self.workers or gpus or max(1, int(resources.get("CPU", 1)))
        options = {"num_gpus": 1, "num_cpus": 0} if gpus else {"num_cpus": 1}
        # Ray gives each worker one OpenMP thread; torch's CPU kernels sum in a thread-count-dependent order,
        # so workers use the driver's thread count to produce the same pixels as a local run.
        threads = os.environ.get("OMP_NUM_THREADS") or str(len(os.sched_getaffinity(0)))
        options["runtime_env"] = {"env_vars": {"OMP_NUM_THREADS": threads, "OMP_WAIT_POLICY": "PASSIVE"}}
        actor_cls = ray.remote(**options)(BatchWorker)
        self.actors = [actor_cls.remote(self.registry_factory, self.cache, self.paths) for _ in range(count)]

    def validate(self, document: dict) -> ValidationResult:
        return self._validator.validate(document)

    def run_one(self, item: WorkItem) -> Outcome:
        """One job on the first free actor (``run`` keeps every actor busy instead)."""
        for _, outcome in self.run([item]):
            return outcome
        return Outcome("interrupted", {"message": "interrupted"})

    def run(self, items: Iterable[WorkItem]) -> Iterator[tuple[WorkItem, Outcome]]:
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        pending = deque(items)
        alive = list(self.actors)
        load = {id(a): 0 for a in alive}
        in_flight: dict[Any, tuple[WorkItem, Any]] = {}
        while (pending and alive and not self._stop) or in_flight:
            while pending and not self._stop:
                actor = min(alive, key=lambda a: load[id(a)], default=None)
                if actor is None or load[id(actor)] >= self.depth:
                    break
                item = pending.popleft()
                ref = actor.run.remote(item)
                in_flight[ref] = (item, actor)
                load[id(actor)] += 1
            if not in_flight:
                break
            ready, _ = ray.wait(list(in_flight), num_returns=1, timeout=0.5)
            if self._stop:
                return  # jobs still running are not recorded; a resumed batch runs them again
            if not ready:
                continue
            ref = ready[0]
            item, actor = in_flight.pop(ref)
            load[id(actor)] -= 1
            try:
                outcome = ray.get(ref)
            except RayActorError as exc:
                if actor in alive:
                    alive.remove(actor)
                outcome = Outcome("error", {"message": f"the Ray worker died: {exc}"})
            except RayTaskError as exc:
                outcome = Outcome("error", {"message": f"the Ray worker failed: {exc}"})
            yield item, outcome
        if not alive and not self._stop:
            for item in pending:
                yield item, Outcome("error", {"message": "no Ray worker is left"})

    def stop(self) -> None:
        self._stop = True  # close() ends the actors, and with them any job still running

    def close(self) -> None:
        if not self.actors and not self._started_ray:
            return
        import ray

        for actor in self.actors:
            try:
                ray.get(actor.close.remote(), timeout=10)
            except Exception:
                pass
            ray.kill(actor)
        self.actors = []
        if self._started_ray:
            ray.shutdown()
            self._started_ray = False
