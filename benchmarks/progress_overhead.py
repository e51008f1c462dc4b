"""What the progress bar costs an attack: one tqdm update per batch of ``run_attack``.

Times the bar's callback alone (microseconds per batch, drawing into a fake terminal) and PGD
through ``robustcheck.engine.run_attack`` on the MLP of _common.py with and without the
callback, interleaved so that load drift hits both alike (process CPU time, one thread).

    python benchmarks/progress_overhead.py [--events 20000] [--batch-size 256] [--steps 10]
"""

from __future__ import annotations

import argparse
import io
import os
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

import _common as C  # noqa: E402

from robustcheck.attacks.pgd import PGD  # noqa: E402
from robustcheck.decision import Decision  # noqa: E402
from robustcheck.engine import run_attack  # noqa: E402
from robustcheck.report import progress  # noqa: E402
from robustcheck.spec import AttackSpec  # noqa: E402
from robustcheck.taggers.torch_module import wrap_module  # noqa: E402


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def callback_cost(calls: int) -> float:
    """Seconds per call of a shown bar's callback (the bar redraws at most every 0.1 s)."""
    with progress.ProgressBar("bench", calls, FakeTerminal()) as bar:
        assert bar.advance is not None
        started = time.perf_counter()
        for _ in range(calls):
            bar.advance(1)
        return (time.perf_counter() - started) / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=20000)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    C.set_threads(1)
    os.environ.pop("PYTEST_CURRENT_TEST", None)
    progress.configure(True)
    progress.BAR_DELAY = 0.0
    print(C.machine(), "|", C.cpu_pressure(), "| load", os.getloadavg())
    print(f"callback: {callback_cost(100_000) * 1e6:.2f} us per batch")

    model, inputs, labels, _ = C.build_mlp(args.events)
    C.freeze(model)
    envelope = C.envelope_for("mlp")
    options = {"epsilon": 1.0, "steps": args.steps, "seed": 0, "batch_size": args.batch_size}
    attack = PGD(AttackSpec("pgd", "pgd", options), seed=0)
    tagger = wrap_module(model, "benchmarks/progress_overhead.py")
    select = torch.ones(len(labels), dtype=torch.bool)

    def attack_with(bar: progress.ProgressBar | None) -> None:
        run_attack(
            attack, tagger, envelope, inputs, labels, Decision(1), select, args.batch_size,
            progress=None if bar is None else bar.advance,
        )  # fmt: skip

    def without() -> None:
        attack_with(None)

    def with_bar() -> None:
        with progress.ProgressBar("pgd", args.events, FakeTerminal()) as bar:
            attack_with(bar)

    cpu: dict[str, list[float]] = {}
    C.interleaved({"no bar": without, "bar": with_bar}, args.repeats, torch.device("cpu"), cpu=cpu)
    batches = -(-args.events // args.batch_size)
    for name, times in cpu.items():
        median = statistics.median(times)
        print(f"{name:>7}: {median:.3f} s CPU per attack ({batches} batches), runs {times}")
    extra = statistics.median(cpu["bar"]) - statistics.median(cpu["no bar"])
    print(f"difference: {extra * 1e3:+.1f} ms per attack ({extra / batches * 1e6:+.0f} us/batch)")


if __name__ == "__main__":
    main()
