"""Event ranges on a Dask cluster (dask.distributed): ``robustcheck run --dask ADDRESS`` and
``pytest --robustcheck --robustcheck-dask ADDRESS``.

``ADDRESS`` is a scheduler address (``tcp://host:8786``), a scheduler file (``*.json``, as
dask-jobqueue and ``dask scheduler --scheduler-file`` write), or ``local:N`` for a
LocalCluster of N single-threaded worker processes started here.

The client (the process that runs the checks) spreads event ranges over the workers: the
chunks of a streamed sample (``chunk_size``), which each worker reads from the file itself,
and for a sample held in memory, ranges of whole attack batches, sent with the task. Each
worker loads the spec's tagger once (a SpecRun cached per spec, device, seed and model
digest) and runs the same pure functions as a single process (robustcheck.ranges); the
client merges the ranges in file order, so every check runs unchanged on the same figures.
Only the spec's path and options travel, never the tagger: the spec and its files must be at
the same paths on the workers (a shared file system). dask is imported only here, and only
when a run asks for a cluster.
"""

from __future__ import annotations

import contextlib
import logging
import math
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from robustcheck.digest import file_digest
from robustcheck.errors import ModelError, RobustcheckError, SpecError
from robustcheck.padding import TRIM_WINDOW
from robustcheck.ranges import (
    AttackRange,
    MergedSample,
    SampleRange,
    attack_range,
    event_ranges,
    kept_positions,
    merge_sample,
    sample_range,
)
from robustcheck.stream import Chunk

if TYPE_CHECKING:
    from robustcheck.core import SpecRun
    from robustcheck.decision import Decision

EXTRA = "pytest-robustcheck[dask]"
# ranges of a sample held in memory hold this many attack batches per worker and pass
RANGES_PER_WORKER = 4
# Dask starts worker processes with MALLOC_TRIM_THRESHOLD_=65536, so that glibc hands freed
# memory back at once; torch's autograd allocates and frees the same blocks at every step, and
# each comes back as fresh pages: a DeepSets PGD loop ran 2.4 to 3.3 times slower (measured
# in a worker and in a plain process with the variable set). local:N workers start without it.
WORKER_ENVIRONMENT = {"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}
# events per read when counting a streamed sample's events (labels only)
COUNT_STEP = 1 << 20


class DaskError(RobustcheckError):
    """Dask is missing, or the cluster cannot be reached."""

    kind = "dask error"


def require_dask(flag: str) -> None:
    """Raise a DaskError naming the extra when dask.distributed is not installed."""
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise DaskError(
            f"{flag} needs dask.distributed, which is not installed",
            field=flag,
            fix=f"pip install '{EXTRA}' (or run without {flag})",
        ) from None


@dataclass(frozen=True)
class WorkerKey:
    """What a worker needs to load a spec's run: its path and overrides, the spec file's
    digest (a rewritten spec is loaded again) and the model's, which the worker's copy must
    match."""

    spec: str
    spec_digest: str
    device: str | None
    seed: int | None
    model_digest: str


_RUNS: dict[WorkerKey, tuple[SpecRun, threading.Lock]] = {}
_RUNS_LOCK = threading.Lock()


def worker_run(key: WorkerKey) -> tuple[SpecRun, threading.Lock]:
    """The worker's SpecRun of a spec, loaded once (with its tagger) and reused by every
    range; the lock serializes the ranges a multi-threaded worker runs on it."""
    with _RUNS_LOCK:
        if key not in _RUNS:
            from robustcheck.core import SpecRun

            run = SpecRun.from_path(key.spec, device=key.device, seed=key.seed)
            if run.model_digest != key.model_digest:
                raise ModelError(
                    "the model file a Dask worker reads differs from the client's "
                    f"(digest {run.model_digest[:12]} against {key.model_digest[:12]})",
                    file=key.spec,
                    field="model.path",
                    fix="give the workers the same files at the same paths (a shared file system)",
                )
            _RUNS[key] = (run, threading.Lock())
        return _RUNS[key]


class _Carried(Exception):
    """A RobustcheckError raised on a worker, carried back whole (file, field, fix)."""

    def original(self) -> RobustcheckError:
        kind, message, file, field, fix = self.args
        return kind(message, file=file, field=field, fix=fix)


@contextlib.contextmanager
def _carried() -> Iterator[None]:
    """Around a worker's task: a RobustcheckError goes back to the client whole."""
    try:
        yield
    except RobustcheckError as exc:
        raise _Carried(type(exc), exc.message, exc.file, exc.field, exc.fix) from None


def count_task(key: WorkerKey, name: str) -> int:
    from robustcheck.data import count_events

    with _carried():
        run, _ = worker_run(key)
        data = run.spec.data[name]
        return count_events(data, run.spec.path, max(COUNT_STEP, data.chunk_size or 0))


def sample_task(key: WorkerKey, name: str, start: int, count: int, kept: np.ndarray) -> SampleRange:
    from robustcheck.data import read_range

    with _carried():
        run, lock = worker_run(key)
    with _carried(), lock:
        dataset, truncated = read_range(run.spec.data[name], run.spec.path, start, count)
        part = sample_range(run, name, start, dataset, kept)
    part.truncated = truncated
    return part


@dataclass(frozen=True)
class AttackJob:
    """An attack as the client ran it: name, epsilon override and method (the stand-in's
    when a gradient-free fallback ran), the decision, batch size and mode."""

    name: str
    epsilon: float | None
    method: str | None
    decision: Decision
    batch_size: int
    full: bool


def attack_task(
    key: WorkerKey,
    job: AttackJob,
    chunk: Chunk | None,
    start: int,
    count: int,
    select: torch.Tensor,
    correct: torch.Tensor,
    kept: np.ndarray | None,
) -> AttackRange:
    from robustcheck.data import read_range
    from robustcheck.engine import take

    with _carried():
        run, lock = worker_run(key)
    with _carried(), lock:
        if chunk is None:  # a streamed sample: the worker reads its range
            dataset, _ = read_range(run.spec.data["nominal"], run.spec.path, start, count)
            chunk = run._chunk(start, dataset)
            del dataset
        attack = run.make_attack(job.name, job.epsilon, job.method)
        if attack.needs_gradients:
            with run._model_errors(chunk.inputs):
                run.tagger.prepare_gradients(take(chunk.inputs, slice(0, 512), run.tagger.device))
        part = attack_range(
            run,
            attack,
            chunk,
            job.decision,
            select,
            correct,
            job.batch_size,
            full=job.full,
            kept=kept,
        )
    part.tally = attack.tally()
    return part


class DaskRanges:
    """A Dask client that runs the event ranges of SpecRuns (one or several at once)."""

    def __init__(self, client: Any, cluster: Any = None, address: str = "") -> None:
        self.client = client
        self.cluster = cluster  # the LocalCluster started here, closed with the client
        self.address = address

    @classmethod
    def connect(cls, address: str, flag: str = "--dask") -> DaskRanges:
        """Connect to ``address`` (see the module's doc), or start ``local:N``."""
        require_dask(flag)
        import dask
        from distributed import Client, LocalCluster

        if address.startswith("local:"):
            text = address.removeprefix("local:")
            if not text.isdigit() or int(text) < 1:
                raise DaskError(
                    f"{address!r} is not local:N with N a number of workers (1 or more)",
                    field=flag,
                    fix="write local:2 for two worker processes on this machine",
                )
            with dask.config.set(WORKER_ENVIRONMENT):
                cluster = LocalCluster(
                    n_workers=int(text),
                    threads_per_worker=1,
                    processes=True,
                    dashboard_address=None,
                    silence_logs=logging.ERROR,  # not the nanny's notes on stopping workers
                )
            return cls(Client(cluster), cluster, address)
        try:
            if address.endswith(".json"):
                client = Client(scheduler_file=address, timeout="20s")
            else:
                client = Client(address, timeout="20s")
        except (OSError, TimeoutError, ValueError) as exc:
            raise DaskError(
                f"cannot reach the Dask scheduler at {address!r}: {exc}",
                field=flag,
                fix="give the scheduler's address (tcp://host:8786), its scheduler file "
                "(*.json) or local:N",
            ) from None
        return cls(client, None, address)

    def close(self) -> None:
        self.client.close()
        if self.cluster is not None:
            self.cluster.close()

    def __enter__(self) -> DaskRanges:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def n_workers(self) -> int:
        return max(1, len(self.client.scheduler_info().get("workers", {})))

    def key(self, run: SpecRun) -> WorkerKey:
        path = Path(run.spec.path).resolve()
        if not path.is_file():
            raise SpecError(
                "a Dask run needs the spec in a file, which the workers load",
                file=path,
                fix="write the spec to this path (or run it without Dask)",
            )
        return WorkerKey(
            str(path),
            file_digest(path),
            run.device_name,
            run.seed_override,
            run.model_digest,
        )

    def read_sample(self, run: SpecRun, name: str) -> tuple[MergedSample, np.ndarray]:
        """A streamed sample read and evaluated range by range on the workers: the merged
        per-event figures, and the kept events (positions, inputs, labels)."""
        from robustcheck.data import _warn_truncated

        data = run.spec.data[name]
        key = self.key(run)
        n = self._result(self.client.submit(count_task, key, name, pure=False))
        if n == 0:
            raise run._no_events(name)
        self._verify_trim(run, name, n)
        kept = kept_positions(data.keep_events, n)
        size = data.chunk_size
        assert size is not None

        def submit(start: int) -> Any:
            count = min(size, n - start)
            here = kept[np.searchsorted(kept, start) : np.searchsorted(kept, start + count)]
            return self.client.submit(sample_task, key, name, start, count, here, pure=False)

        merged = merge_sample(list(self._in_order(submit, list(range(0, n, size)))))
        if merged.truncated is not None and merged.truncated.events:
            _warn_truncated(data, replace(merged.truncated, of=n))
        return merged, kept

    @staticmethod
    def _verify_trim(run: SpecRun, name: str, n: int) -> None:
        """``trim_padding`` verified here, on the first events of the file, as one process
        does on its first chunk: so that every verdict says it was used (workers verify it
        again on their own ranges)."""
        from robustcheck.data import read_range
        from robustcheck.padding import VERIFY_EVENTS

        if run._trim is not None or not any(s.trim_padding for s in run.spec.inputs.values()):
            return
        data = run.spec.data[name]
        head = min(n, VERIFY_EVENTS, data.chunk_size or n)  # within the first chunk
        dataset, _ = read_range(data, run.spec.path, 0, head)
        run._padding_trim(run._chunk(0, dataset).inputs, name)

    def attack(
        self,
        run: SpecRun,
        job: tuple[str, float | None, str | None],
        decision: Decision,
        select: torch.Tensor,
        correct: torch.Tensor,
        batch_size: int,
        full: bool,
        kept: np.ndarray | None,
    ) -> Iterator[AttackRange]:
        """The attack's ranges, run on the workers, in file order.

        A streamed sample goes by its chunks (the workers read them); a sample in memory by
        ranges of a multiple of ``batch_size`` events (and of TRIM_WINDOW with trim_padding;
        sent with the task). Every event draws its own random streams, and a coupled attack's
        blocks and trimmed batches are those of one process.
        """
        task = AttackJob(*job, decision=decision, batch_size=batch_size, full=full)
        key = self.key(run)
        size = run.spec.data["nominal"].chunk_size
        n = len(select)
        if size is not None:
            ranges = event_ranges(n, size)
        else:
            unit = batch_size
            if any(s.trim_padding and s.mask is not None for s in run.spec.inputs.values()):
                unit = math.lcm(batch_size, TRIM_WINDOW)  # trimmed batches never mix windows
            n_units = -(-n // unit)
            per_range = max(1, -(-n_units // (RANGES_PER_WORKER * self.n_workers)))
            ranges = event_ranges(n, unit * per_range)
        inputs, labels = run.inputs("nominal") if size is None else ({}, None)

        def submit(bounds: tuple[int, int]) -> Any:
            start, stop = bounds
            chunk = None
            if size is None:  # copies: a pickled view would carry the whole tensor
                assert labels is not None
                part = {name: x[start:stop].clone() for name, x in inputs.items()}
                chunk = Chunk(start, part, labels[start:stop].clone())
            here = None
            if kept is not None:
                here = kept[np.searchsorted(kept, start) : np.searchsorted(kept, stop)]
            return self.client.submit(
                attack_task,
                key,
                task,
                chunk,
                start,
                stop - start,
                select[start:stop].clone(),
                correct[start:stop].clone(),
                here,
                pure=False,
            )

        yield from self._in_order(submit, ranges)

    def _in_order(self, submit: Callable[[Any], Any], items: list[Any]) -> Iterator[Any]:
        """The results of ``submit(item)`` in the items' order, with a bounded number of
        ranges in flight (so that results do not pile up faster than they are merged)."""
        window = max(4, 3 * self.n_workers)
        pending: deque[Any] = deque()
        upcoming = iter(items)
        try:
            for item in upcoming:
                pending.append(submit(item))
                if len(pending) >= window:
                    break
            while pending:
                result = self._result(pending.popleft())
                for item in upcoming:
                    pending.append(submit(item))
                    break
                yield result
        finally:
            for future in pending:
                future.cancel()

    @staticmethod
    def _result(future: Any) -> Any:
        try:
            return future.result()
        except _Carried as carried:
            raise carried.original() from None
