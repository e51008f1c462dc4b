"""PGD with the tagger compiled (``[model] compile = true``, torch.compile) or eager.

For the MLP and the DeepSets tagger of ``_common.py`` it writes an .npz sample and a spec, and
runs the spec's PGD attack through robustcheck's engine twice per mode, each mode in a fresh
process: once to warm up (for the compiled mode this call compiles, and its seconds are
reported as the compile cost), then timed. Reported: seconds per event per PGD step of the
timed run, the warm-up seconds, and the fooling rate, which must be the same in both modes.

    python benchmarks/compile_speed.py --threads 1
    python benchmarks/compile_speed.py --device cuda --events 200000 20000   # GPU table
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--events", type=int, nargs=2, default=[20_000, 4_000], help="MLP and DeepSets events"
    )
    ap.add_argument("--steps", type=int, default=10, help="PGD steps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        return child(Path(args.child[0]), args.child[1] == "compiled", args.threads)

    C.set_threads(args.threads)
    print(f"# {C.machine()}; torch threads {args.threads}; device {args.device}")
    print(f"# PGD {args.steps} steps, every correctly classified event attacked")
    header = (
        f"{'tagger':>9} {'events':>7} {'mode':>9} {'us/event/step':>13} {'warm-up s':>9} "
        f"{'fooling rate':>12} {'speed-up':>8}"
    )
    print(header)
    folder = Path(tempfile.mkdtemp(prefix="rc-compile-"))
    try:
        shutil.copy(Path(C.__file__), folder / "bench_models.py")
        for kind, n in zip(("mlp", "deepsets"), args.events, strict=True):
            spec = write_case(folder, kind, n, args)
            eager_time = None
            for mode in ("eager", "compiled"):
                out = subprocess.run(
                    [sys.executable, __file__, "--child", str(spec), mode]
                    + ["--threads", str(args.threads)],
                    capture_output=True,
                    text=True,
                    check=False,
                )
                if out.returncode != 0:
                    print(out.stdout + out.stderr)
                    return out.returncode
                r = json.loads(out.stdout.strip().splitlines()[-1])
                per = r["seconds"] / max(r["attacked"], 1) / args.steps * 1e6
                eager_time = per if mode == "eager" else eager_time
                ratio = f"{eager_time / per:8.2f}" if eager_time else f"{'':>8}"
                print(
                    f"{kind:>9} {n:>7,} {mode:>9} {per:>13.2f} {r['warmup']:>9.1f} "
                    f"{r['fooling_rate']:>12.4f} {ratio}",
                    flush=True,
                )
        print(f"# load after: {C.cpu_pressure()}")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    return 0


def child(spec: Path, compiled: bool, threads: int) -> int:
    """Warm up, then time the spec's PGD attack; print the figures as JSON."""
    import torch

    torch.set_num_threads(threads)
    from dataclasses import replace

    from robustcheck.core import SpecRun
    from robustcheck.spec import load_spec

    loaded = load_spec(spec)
    loaded = replace(loaded, model=replace(loaded.model, compile=compiled))
    run = SpecRun(loaded)
    run.log_probs("nominal")
    started = time.perf_counter()
    run.adversaries("pgd", epsilon=float(loaded.attacks["pgd"].options["epsilon"]))
    warmup = time.perf_counter() - started
    outcome = run.adversaries("pgd")
    attacked = int(outcome.correct.sum())
    print(
        json.dumps(
            {
                "seconds": outcome.seconds,
                "warmup": warmup,
                "attacked": attacked,
                "fooling_rate": int(outcome.fooled.sum()) / max(attacked, 1),
            }
        )
    )
    return 0


def write_case(folder: Path, kind: str, n: int, args: argparse.Namespace) -> Path:
    """The trained tagger's weights, an .npz sample of n events and its spec."""
    import numpy as np
    import torch

    build = C.build_mlp if kind == "mlp" else C.build_deepsets
    model, inputs, labels, _ = build(n)
    torch.save(model.state_dict(), folder / f"{kind}.pt")
    np.savez(folder / f"{kind}.npz", y=labels.numpy(), **{k: v.numpy() for k, v in inputs.items()})
    doc = C.spec_doc(
        kind,
        args.device,
        f"{kind}.npz",
        {k: k for k in inputs},
        epsilon=1.0,
        steps=args.steps,
        seed=1,
    )
    return C.write_spec(folder / f"{kind}.robust.toml", doc)


if __name__ == "__main__":
    raise SystemExit(main())
