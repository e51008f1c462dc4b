"""Cost of the design-effect correction of the invariance tests on particle inputs
(robustcheck.invariance_stats): ``compare`` of two samples of jets with the entries' events
(corrected) and without (per-entry tests), and the false-alarm rates of both on samples of
the same jets.

    python3 benchmarks/invariance_clusters.py --jets 10000 --features 3
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from robustcheck.checks.invariance import pvalue_tests
from robustcheck.invariance_stats import InvarianceFigures, compare


def jets(
    rng: np.random.Generator, n: int, features: int, low: int, high: int
) -> tuple[np.ndarray, np.ndarray]:
    """Real entries (entries, features) of n jets of low..high constituents sharing a jet-level
    offset (intra-jet correlation 0.8), and the jet of each entry."""
    multiplicity = rng.integers(low, high + 1, n)
    ids = np.repeat(np.arange(n), multiplicity)
    offset = rng.normal(size=(n, features))
    values = offset[ids] + 0.5 * rng.normal(size=(len(ids), features))
    return values, ids


def family_alarm(figures: InvarianceFigures, level: float) -> bool:
    pvalues = {
        "ks": np.array([f.ks_pvalue for f in figures.features]),
        "chi2": np.array([f.chi2_pvalue for f in figures.features]),
        "corr": np.array([p.pvalue for p in figures.pairs]),
    }
    return bool(pvalue_tests(pvalues, dict.fromkeys(pvalues, level), "holm").alarm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jets", type=int, default=10_000, help="jets per sample")
    parser.add_argument("--features", type=int, default=3)
    parser.add_argument("--low", type=int, default=30, help="fewest constituents per jet")
    parser.add_argument("--high", type=int, default=60, help="most constituents per jet")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls (median)")
    parser.add_argument("--null-pairs", type=int, default=50, help="0: no false-alarm study")
    parser.add_argument("--null-jets", type=int, default=200)
    parser.add_argument("--level", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    names = {"parts": tuple(f"f{i}" for i in range(args.features))}
    movable = {"parts": np.ones(args.features, dtype=bool)}
    (a, ia), (b, ib) = (jets(rng, args.jets, args.features, args.low, args.high) for _ in "ab")
    print(
        f"{args.jets:,} jets per sample, {len(a):,} and {len(b):,} entries, "
        f"{args.features} features"
    )
    for label, kwargs in (
        ("per-entry", {}),
        ("corrected", {"reference_events": {"parts": ia}, "attacked_events": {"parts": ib}}),
    ):
        times = []
        for _ in range(args.repeats):
            start = time.perf_counter()
            compare({"parts": a}, {"parts": b}, names, movable, **kwargs)
            times.append(time.perf_counter() - start)
        print(f"  compare, {label}: {np.median(times):.3f} s (median of {args.repeats})")
    if args.null_pairs:
        alarms = {"per-entry": 0, "corrected": 0}
        for _ in range(args.null_pairs):
            (a, ia), (b, ib) = (
                jets(rng, args.null_jets, args.features, args.low, args.high) for _ in "ab"
            )
            plain = compare({"parts": a}, {"parts": b}, names, movable)
            fixed = compare(
                {"parts": a},
                {"parts": b},
                names,
                movable,
                reference_events={"parts": ia},
                attacked_events={"parts": ib},
            )
            alarms["per-entry"] += family_alarm(plain, args.level)
            alarms["corrected"] += family_alarm(fixed, args.level)
        print(
            f"false alarms of the Holm family at {args.level:g} over {args.null_pairs} null pairs "
            f"of {args.null_jets} jets (seed {args.seed}): "
            + ", ".join(f"{k} {v / args.null_pairs:.0%}" for k, v in alarms.items())
        )


if __name__ == "__main__":
    main()
