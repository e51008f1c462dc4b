"""False-alarm rate and power of the fooling-rate regression test (baseline.py).

A baseline and a candidate with the same true fooling rate (or, with a tolerance, a candidate
worse by exactly the tolerance) should be called a regression in at most 5% of releases at
``regression_confidence = 0.95``. This script measures how often each test does so:

* ``z (before)``: the pooled two-proportion z-test robustcheck used before (tolerance
  subtracted from the difference), one-sided at 1.645;
* ``Fisher``: Fisher's exact test, one-sided (reference; it cannot take a tolerance);
* ``exact (now)``: ``robustcheck.baseline.exact_worse_pvalue``, the exact unconditional test
  on the score z with the Berger-Boos restriction.

Rates are exact, not simulated: for each old count k2, every test rejects from some new count
c(k2) up (its region is monotone), so the rate is sum_k2 P(k2) P(k1 >= c(k2)). The old counts
with probability below 1e-12 are left out. A seeded Monte Carlo at 100 events checks the
enumeration. Run: ``python3 benchmarks/regression_calibration.py`` (about two minutes on one
core; ``--quick`` for the first rows only).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
from scipy.stats import binom, hypergeom, norm

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robustcheck.baseline import exact_worse_pvalue  # noqa: E402

ALPHA = 0.05
CUT = 1e-12


def z_rejects(k1: np.ndarray, n1: int, k2: np.ndarray, n2: int, tolerance: float) -> np.ndarray:
    pooled = (k1 + k2) / (n1 + n2)
    error = np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2))
    worse = k1 / n1 - k2 / n2 - tolerance
    with np.errstate(divide="ignore", invalid="ignore"):
        z = np.where(error > 0, worse / error, np.where(worse > 0, np.inf, 0.0))
    return z > norm.ppf(1 - ALPHA)


def fisher_rejects(k1: np.ndarray, n1: int, k2: np.ndarray, n2: int, _: float) -> np.ndarray:
    return hypergeom.sf(k1 - 1, n1 + n2, k1 + k2, n1) <= ALPHA


def thresholds(test: str, n1: int, n2: int, k2s: np.ndarray, tolerance: float) -> np.ndarray:
    """For each old count, the smallest new count the test calls a regression (n1 + 1: none)."""
    out = np.empty(len(k2s), dtype=np.int64)
    for i, k2 in enumerate(k2s):
        if test == "exact":

            def rejects(k1: int, k2: int = int(k2)) -> bool:
                return exact_worse_pvalue(k1, n1, k2, n2, tolerance) < ALPHA
        else:
            rule = z_rejects if test == "z" else fisher_rejects

            def rejects(k1: int, k2: int = int(k2), rule=rule) -> bool:  # type: ignore[misc]
                return bool(rule(np.array(k1), n1, np.array(k2), n2, tolerance))

        lo, hi = 0, n1 + 1  # the p-value falls as the new count rises
        while lo < hi:
            mid = (lo + hi) // 2
            if rejects(mid):
                hi = mid
            else:
                lo = mid + 1
        out[i] = lo
    return out


def rejection_rate(
    test: str, n1: int, n2: int, new_rate: float, old_rate: float, tolerance: float
) -> float:
    k2s = np.arange(n2 + 1)
    keep = binom.pmf(k2s, n2, old_rate) > CUT
    k2s = k2s[keep]
    need = thresholds(test, n1, n2, k2s, tolerance)
    return float(np.sum(binom.pmf(k2s, n2, old_rate) * binom.sf(need - 1, n1, new_rate)))


def monte_carlo(n: int, rate: float, repeats: int, seed: int) -> dict[str, float]:
    """Seeded simulation of the same thing at one setting, each distinct table tested once."""
    rng = np.random.default_rng(seed)
    new, old = rng.binomial(n, rate, repeats), rng.binomial(n, rate, repeats)
    tables, index = np.unique(np.stack([new, old], 1), axis=0, return_inverse=True)
    exact = np.array([exact_worse_pvalue(int(a), n, int(b), n) < ALPHA for a, b in tables])
    return {
        "z (before)": float(np.mean(z_rejects(new, n, old, n, 0.0))),
        "Fisher": float(np.mean(fisher_rejects(new, n, old, n, 0.0))),
        "exact (now)": float(np.mean(exact[index.ravel()])),
    }


SIZE_ROWS = [  # (n new, n old, old rate, tolerance)
    (100, 100, 0.05, 0.0),
    (100, 100, 0.02, 0.0),
    (50, 50, 0.05, 0.0),
    (200, 200, 0.01, 0.0),
    (400, 800, 0.004, 0.0),
    (400, 800, 0.027, 0.0),
    (1000, 1000, 0.01, 0.0),
    (1000, 1000, 0.05, 0.0),
    (100, 100, 0.05, 0.02),
    (300, 300, 0.002, 0.01),
    (1000, 1000, 0.05, 0.02),
    (400, 800, 0.002, 0.05),
]
POWER_ROWS = [  # (n, old rate, new rate)
    (100, 0.05, 0.15),
    (200, 0.02, 0.08),
    (1000, 0.05, 0.08),
    (1000, 0.01, 0.025),
]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="the first rows only")
    parser.add_argument("--repeats", type=int, default=100_000, help="Monte Carlo repeats")
    args = parser.parse_args()
    size_rows = SIZE_ROWS[:3] if args.quick else SIZE_ROWS
    power_rows = POWER_ROWS[:1] if args.quick else POWER_ROWS
    started = time.perf_counter()
    print(f"false-alarm rate at {1 - ALPHA:.0%} (nominal {ALPHA:.0%}): true rates equal, or")
    print("the candidate worse by exactly the tolerance\n")
    print("| events (new, old) | old rate | tolerance | z (before) | Fisher | exact (now) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for n1, n2, rate, tolerance in size_rows:
        new_rate = rate + tolerance
        cells = [
            f"{rejection_rate(test, n1, n2, new_rate, rate, tolerance):.2%}"
            if test != "fisher" or tolerance == 0
            else "-"
            for test in ("z", "fisher", "exact")
        ]
        print(f"| {n1}, {n2} | {rate:g} | {tolerance:g} | " + " | ".join(cells) + " |")
    print("\npower (how often a real regression is caught), no tolerance\n")
    print("| events | old rate | new rate | z (before) | Fisher | exact (now) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    for n, old_rate, new_rate in power_rows:
        cells = [
            f"{rejection_rate(test, n, n, new_rate, old_rate, 0.0):.1%}"
            for test in ("z", "fisher", "exact")
        ]
        print(f"| {n} | {old_rate:g} | {new_rate:g} | " + " | ".join(cells) + " |")
    mc = monte_carlo(100, 0.05, args.repeats, seed=1)
    error = np.sqrt(ALPHA * (1 - ALPHA) / args.repeats)
    print(
        f"\nMonte Carlo, 100 events, rate 0.05, {args.repeats:,} seeded repeats "
        f"(+-{error:.2%}): " + ", ".join(f"{k} {v:.2%}" for k, v in mc.items())
    )
    print(f"({time.perf_counter() - started:.0f} s)")


if __name__ == "__main__":
    main()
