"""Dask throughput: a streamed spec run in one process and through local:1 and local:2 clusters.

It writes a file of DeepSets jets (streaming_memory.py's: 64 constituents x 4 features and a
mask), then runs the same streamed spec (PGD and a fooling_rate and an invariance check):

- in one process with 1 and with 2 torch threads (the reference; same fooling rate);
- through ``local:1`` and ``local:2`` (single-threaded worker processes started here); each
  twice on the same cluster: "cold" (each worker loads the tagger) and "warm".

It also measures, in this process, the per-chunk costs that the scaling model needs: reading a
chunk (``read_range``), evaluating it, attacking it (``attack_range``), the size of a range's
result, and the client's merge of it. Prints a table and the model's prediction for N workers:

    T(N) = T_client + n_chunks * max((read + evaluate + attack) / N, client per chunk)

    python benchmarks/dask_throughput.py                      # 40,000 events, chunks of 5,000
    python benchmarks/dask_throughput.py --events 200000 --chunk 10000 --format root
"""

from __future__ import annotations

import argparse
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402
import streaming_memory as S  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=40_000)
    ap.add_argument("--chunk", type=int, default=5_000, help="chunk_size (one Dask range)")
    ap.add_argument("--keep", type=int, default=5_000, help="keep_events")
    ap.add_argument("--steps", type=int, default=5, help="PGD steps")
    ap.add_argument("--format", choices=("h5", "parquet", "root"), default="h5")
    ap.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    args = ap.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    uptime = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    print(f"# {C.machine()}; {C.cpu_pressure()}")
    print(f"# uptime: {uptime}")
    print(
        f"# {args.events:,} DeepSets jets ({args.format}), chunk_size {args.chunk:,}, keep_events "
        f"{args.keep:,}; PGD {args.steps} steps; checks fooling_rate and invariance"
    )
    folder = Path(tempfile.mkdtemp(prefix="rc-dask-"))
    try:
        model, _, _, _ = C.build_deepsets(16)
        torch.save(model.state_dict(), folder / "deepsets.pt")
        shutil.copy(Path(C.__file__), folder / "bench_models.py")
        sys.path.insert(0, str(folder))  # workers inherit it (multiprocessing spawn)
        data = S.write_data(folder, args.events, args.format)
        spec = S.write_spec(folder, data, args, "streamed")
        costs = chunk_costs(spec)
        print()
        print(f"{'run':>22} {'seconds':>8} {'events/s':>9} {'vs 1 process':>12} {'fooling':>8}")
        reference = None
        for threads in (1, 2):
            torch.set_num_threads(threads)
            seconds, rate = timed(spec, None)
            reference = reference or seconds
            row(f"1 process, {threads} thread{'s' * (threads > 1)}", seconds, args, reference, rate)
        torch.set_num_threads(1)
        from robustcheck.distributed import DaskRanges

        for n in args.workers:
            started = time.perf_counter()
            with DaskRanges.connect(f"local:{n}") as cluster:
                startup = time.perf_counter() - started
                for state in ("cold", "warm"):
                    seconds, rate = timed(spec, cluster)
                    row(f"local:{n} {state}", seconds, args, reference, rate)
                print(f"{'':>22} (cluster start {startup:.1f} s, not counted)")
        model_lines(costs, args, reference)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def row(name: str, seconds: float, args: argparse.Namespace, reference: float, rate: float):
    print(
        f"{name:>22} {seconds:>8.1f} {args.events / seconds:>9,.0f} "
        f"{reference / seconds:>11.2f}x {rate:>8.4f}",
        flush=True,
    )


def timed(spec: Path, cluster: object) -> tuple[float, float]:
    """Seconds of a whole spec run (nominal pass, attack, checks), and its fooling rate."""
    from robustcheck.core import SpecRun

    run = SpecRun.from_path(spec, cluster=cluster)
    run.tagger  # noqa: B018 - the client's model load is not the cluster's work
    started = time.perf_counter()
    results = run.run()
    seconds = time.perf_counter() - started
    rate = next(r.figures["fooling_rate"] for r in results if "fooling_rate" in r.figures)
    return seconds, rate


def chunk_costs(spec: Path) -> dict[str, float]:
    """Mean per-chunk seconds of the work a worker does and of the client's part, in this
    process (1 torch thread), and the bytes of a range's result."""
    import torch

    from robustcheck.core import SpecRun
    from robustcheck.data import read_range
    from robustcheck.decision import Decision
    from robustcheck.ranges import add_shifts, attack_range, sample_range
    from robustcheck.stream import ShiftSums

    run = SpecRun.from_path(spec)
    data = run.spec.data["nominal"]
    n = run.n_events()  # the nominal pass, streamed in this process
    size = data.chunk_size
    assert size is not None
    decision = Decision(run.spec.model.signal_class)
    correct = decision.decide(run.log_probs()) == decision.target(run.labels())
    attack = run.make_attack("pgd")
    kept = run.kept()
    out: dict[str, list[float]] = {k: [] for k in ("read", "evaluate", "attack", "merge", "pickle")}
    sizes: list[int] = []
    shifts = ShiftSums(run.envelope)
    for start in range(0, n, size):
        count = min(size, n - start)
        t0 = time.perf_counter()
        dataset, _ = read_range(data, run.spec.path, start, count)
        chunk = run._chunk(start, dataset)
        t1 = time.perf_counter()
        sample_range(run, "nominal", start, dataset, kept)
        t2 = time.perf_counter()
        rows = slice(start, start + count)
        part = attack_range(
            run, attack, chunk, decision, correct[rows], correct[rows], 256,
            full=False, kept=kept,
        )  # fmt: skip
        t3 = time.perf_counter()
        blob = pickle.dumps(part)
        part = pickle.loads(blob)
        t4 = time.perf_counter()
        merged = torch.empty(count, 2)
        merged[:] = part.log_probs
        add_shifts(shifts, part)
        t5 = time.perf_counter()
        sizes.append(len(blob))
        for key, seconds in zip(out, (t1 - t0, t2 - t1, t3 - t2, t5 - t4, t4 - t3), strict=True):
            out[key].append(seconds)
    costs = {key: sum(values) / len(values) for key, values in out.items()}
    costs["chunks"] = len(sizes)
    costs["result_kb"] = sum(sizes) / len(sizes) / 1024
    print(
        f"# per chunk (mean of {len(sizes)}, 1 thread): read {costs['read'] * 1e3:.0f} ms, "
        f"evaluate {costs['evaluate'] * 1e3:.0f} ms, attack {costs['attack'] * 1e3:.0f} ms; "
        f"result {costs['result_kb']:.0f} kB, pickled+unpickled in "
        f"{costs['pickle'] * 1e3:.1f} ms, merged in {costs['merge'] * 1e3:.2f} ms"
    )
    return costs


def model_lines(costs: dict[str, float], args: argparse.Namespace, alone: float) -> None:
    """The scaling model's prediction from the measured per-chunk costs; ``alone``: the
    seconds of the run in one process, whose part outside the chunks is the client's own."""
    work = costs["read"] * 2 + costs["evaluate"] + costs["attack"]  # read twice: nominal, attack
    client = costs["pickle"] * 2 + costs["merge"]  # two passes' results, deserialized, merged
    fixed = max(0.0, alone - costs["chunks"] * work)
    print()
    print(
        f"# model: worker work per chunk w = 2 x read + evaluate + attack = {work * 1e3:.0f} ms; "
        f"client work per chunk c = {client * 1e3:.1f} ms (+ Dask's per-task overhead, "
        "a few ms)"
    )
    print(
        f"# T(N) = T_client + n_chunks x max(w / N, c), T_client = {fixed:.2f} s (the checks on "
        f"the kept events: one process's time less n_chunks x w); ranges saturate near "
        f"N = w / c = {work / client:,.0f}"
    )
    for n in (1, 2, 8, 32, 128):
        t = fixed + costs["chunks"] * max(work / n, client)
        print(f"#   N = {n:>3}: {t:6.2f} s for {args.events:,} events, {args.events / t:,.0f}/s")
    print(f"# (os.cpu_count() = {os.cpu_count()}: more workers than cores only share them)")


if __name__ == "__main__":
    raise SystemExit(main())
