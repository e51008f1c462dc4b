"""Peak memory of a spec run on files larger than one chunk: streamed (``chunk_size``) or whole.

For each file size (a multiple of the chunk) it writes a file of DeepSets jets (64
constituents x (pt, eta, phi, energy) and a mask, about 1.3 kB per event), block by block so
that the writer itself stays small, and then runs the same spec twice, each time in a fresh
process: once reading the whole file (no ``chunk_size``) and once streamed in chunks. Each
child reports its peak resident memory (``ru_maxrss``) and the resident memory it had before
the run (torch, robustcheck and the model loaded), so the table shows what the run added.

    python benchmarks/streaming_memory.py --threads 2                 # HDF5, chunk 10,000
    python benchmarks/streaming_memory.py --format parquet --multiples 1 4 16 64
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

BLOCK = 10_000  # events generated and written at a time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--chunk", type=int, default=10_000, help="chunk_size of the streamed run")
    ap.add_argument("--keep", type=int, default=10_000, help="keep_events of the streamed run")
    ap.add_argument(
        "--multiples", type=int, nargs="+", default=[1, 4, 16], help="file sizes in chunks"
    )
    ap.add_argument("--format", choices=("h5", "parquet", "root"), default="h5")
    ap.add_argument("--steps", type=int, default=5, help="PGD steps")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--modes", nargs="+", choices=("whole", "streamed"), default=["whole", "streamed"]
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(Path(args.child), args.threads)

    C.set_threads(args.threads)
    print(f"# {C.machine()}; torch threads {args.threads}; format {args.format}")
    print(
        f"# chunk_size {args.chunk:,} events, keep_events {args.keep:,}; PGD {args.steps} steps; "
        "checks: fooling_rate and invariance"
    )
    header = (
        f"{'events':>9} {'file MB':>8} {'mode':>9} {'peak MB':>8} {'before MB':>9} "
        f"{'added MB':>8} {'kB/event':>8} {'x inputs':>8} {'seconds':>8} {'fooling rate':>12}"
    )
    print(header)
    folder = Path(tempfile.mkdtemp(prefix="rc-stream-"))
    try:
        model, _, _, _ = C.build_deepsets(16)
        import torch

        torch.save(model.state_dict(), folder / "deepsets.pt")
        shutil.copy(Path(C.__file__), folder / "bench_models.py")
        for multiple in args.multiples:
            n = multiple * args.chunk
            data = write_data(folder, n, args.format)
            size = data.stat().st_size / 2**20
            for mode in args.modes:
                spec = write_spec(folder, data, args, mode)
                out = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        str(spec),
                        "--threads",
                        str(args.threads),
                    ],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode != 0:
                    print(out.stdout + out.stderr)
                    return out.returncode
                r = json.loads(out.stdout.strip().splitlines()[-1])
                added = r["peak_mb"] - r["before_mb"]
                print(
                    f"{n:>9,} {size:>8.0f} {mode:>9} {r['peak_mb']:>8.0f} {r['before_mb']:>9.0f} "
                    f"{added:>8.0f} {added * 2**20 / n / 1e3:>8.2f} {added / size:>8.2f} "
                    f"{r['seconds']:>8.1f} {r['fooling_rate']:>12.4f}",
                    flush=True,
                )
                stages = ", ".join(f"{k} {v:.0f}" for k, v in r["stages"].items())
                print(f"#   peak MB added by the end of each stage: {stages}", flush=True)
            data.unlink()
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def child(spec: Path, threads: int) -> int:
    """Run one spec stage by stage; print its peak and starting resident memory (MB), the
    peak each stage added over the start, seconds and the fooling rate."""
    import torch

    torch.set_num_threads(threads)
    from robustcheck.core import SpecRun

    run = SpecRun.from_path(spec)
    run.tagger  # noqa: B018 - load the model before measuring the start
    import scipy.special
    import scipy.stats  # noqa: F401 - the checks' libraries are a fixed cost, not the run's

    before = resident_mb()
    probe = PeakProbe()
    stages: dict[str, float] = {}
    started = time.perf_counter()
    with probe:
        run.log_probs("nominal")  # read (and, streamed, evaluate) the sample
        stages["read+evaluate"] = probe.take() - before
        run.nominal  # noqa: B018 - the sanity gates
        stages["sanity"] = probe.take() - before
        results = []
        for check in run.spec.checks:
            results.append(run.run_check(check))
            stages[check.type] = probe.take() - before
    seconds = time.perf_counter() - started
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kB on Linux
    rate = next(r.figures["fooling_rate"] for r in results if "fooling_rate" in r.figures)
    print(
        json.dumps(
            {
                "peak_mb": peak,
                "before_mb": before,
                "seconds": seconds,
                "fooling_rate": rate,
                "stages": stages,
            }
        )
    )
    return 0


class PeakProbe:
    """Samples the resident memory every few milliseconds in a thread; ``take()`` returns the
    peak (MB) since the last ``take()``."""

    def __init__(self, interval: float = 0.002) -> None:
        import threading

        self.interval = interval
        self.peak = 0.0
        self.lock = threading.Lock()
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self.stop.is_set():
            now = resident_mb()
            with self.lock:
                self.peak = max(self.peak, now)
            self.stop.wait(self.interval)

    def take(self) -> float:
        with self.lock:
            peak, self.peak = max(self.peak, resident_mb()), resident_mb()
        return peak

    def __enter__(self) -> PeakProbe:
        self.peak = resident_mb()
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()


def resident_mb() -> float:
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize() / 2**20


def blocks(n: int):
    """(parts, mask, labels) of n events, BLOCK at a time, each block with its own seed."""
    for number, start in enumerate(range(0, n, BLOCK)):
        yield C.parts_data(min(BLOCK, n - start), seed=C.SEED + 7 + number)


def write_data(folder: Path, n: int, kind: str) -> Path:
    path = folder / f"jets.{kind}"
    if kind == "h5":
        import h5py

        with h5py.File(path, "w") as handle:
            made = {
                "parts": handle.create_dataset(
                    "parts", (n, C.N_PARTS, 4), "f4", chunks=(1024, C.N_PARTS, 4)
                ),
                "mask": handle.create_dataset(
                    "mask", (n, C.N_PARTS), "f4", chunks=(1024, C.N_PARTS)
                ),
                "y": handle.create_dataset("y", (n,), "i8"),
            }
            start = 0
            for parts, mask, y in blocks(n):
                stop = start + len(y)
                made["parts"][start:stop], made["mask"][start:stop], made["y"][start:stop] = (
                    parts,
                    mask,
                    y,
                )
                start = stop
    elif kind == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        writer = None
        for parts, mask, y in blocks(n):
            table = pa.table(
                {
                    "parts": pa.FixedSizeListArray.from_arrays(
                        pa.FixedSizeListArray.from_arrays(parts.reshape(-1), 4), C.N_PARTS
                    ),
                    "mask": pa.FixedSizeListArray.from_arrays(mask.reshape(-1), C.N_PARTS),
                    "y": y,
                }
            )
            writer = writer or pq.ParquetWriter(path, table.schema)
            writer.write_table(table, row_group_size=BLOCK)
        assert writer is not None
        writer.close()
    else:
        import uproot

        with uproot.recreate(path) as handle:
            tree = None
            for parts, mask, y in blocks(n):
                branches = {"parts": parts, "mask": mask, "y": y}
                if tree is None:
                    tree = handle.mktree(
                        "Events", {k: (v.dtype, v.shape[1:]) for k, v in branches.items()}
                    )
                tree.extend(branches)
    return path


def write_spec(folder: Path, data: Path, args: argparse.Namespace, mode: str) -> Path:
    doc = C.spec_doc(
        "deepsets",
        "cpu",
        data.name,
        {"parts": "parts", "mask": "mask"},
        epsilon=1.0,
        steps=args.steps,
        seed=1,
    )
    if mode == "streamed":
        doc["data"]["nominal"].update(chunk_size=args.chunk, keep_events=args.keep)
    doc["checks"].append({"type": "invariance", "attack": "pgd", "ks_min_pvalue": 1e-9})
    return C.write_spec(folder / f"{mode}.robust.toml", doc)


if __name__ == "__main__":
    raise SystemExit(main())
