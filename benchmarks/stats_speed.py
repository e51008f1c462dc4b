"""Time robustcheck.stats against per-feature scipy / NumPy loops on large float32 samples.

    python benchmarks/stats_speed.py [--events 1000000] [--features 50] [--shifted 10]

The nominal sample is standard normal, with every fifth feature integer-valued (many ties). The
perturbed sample is drawn the same way, ``--shifted`` features moved by 0.005 sigma: small
shifts whose KS p-values fall in the range where scipy's exact Smirnov tail is slow. Each
function runs once; the loops are the obvious per-feature code, and results are compared.
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.stats

from robustcheck import stats


def make_sample(rng: np.random.Generator, n: int, f: int, shift: np.ndarray) -> np.ndarray:
    x = rng.standard_normal((n, f), dtype=np.float32)
    x += shift.astype(np.float32)
    ints = np.arange(f) % 5 == 4
    x[:, ints] = np.floor(4 * x[:, ints] + 20)  # integer-valued, like a multiplicity
    return x


def ks_loop(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    res = [scipy.stats.ks_2samp(a[:, j], b[:, j], method="asymp") for j in range(a.shape[1])]
    return np.array([r.statistic for r in res]), np.array([r.pvalue for r in res])


def chi2_loop(a: np.ndarray, b: np.ndarray, bins: int = 20, min_expected: float = 5) -> tuple:
    """Per feature: quantile edges, histograms, greedy merging, scipy.stats.chi2_contingency."""
    stat, pval = [], []
    for j in range(a.shape[1]):
        xa, xb = a[:, j], b[:, j]
        edges = np.unique(np.quantile(xa.astype(np.float64), np.linspace(0, 1, bins + 1)))
        inner = edges[1:-1]
        ca = np.bincount(np.searchsorted(inner, xa, side="right"), minlength=inner.size + 1)
        cb = np.bincount(np.searchsorted(inner, xb, side="right"), minlength=inner.size + 1)
        small, grand = min(xa.size, xb.size), xa.size + xb.size
        groups, acc = [], np.zeros(2, dtype=np.int64)
        for pair in zip(ca, cb, strict=True):
            acc += pair
            if acc.sum() > 0 and small * acc.sum() / grand >= min_expected:
                groups.append(acc)
                acc = np.zeros(2, dtype=np.int64)
        if acc.sum() > 0:
            if groups:
                groups[-1] = groups[-1] + acc
            else:
                groups.append(acc)
        if len(groups) < 2:
            stat.append(0.0)
            pval.append(1.0)
            continue
        ref = scipy.stats.chi2_contingency(np.array(groups).T, correction=False)
        stat.append(ref.statistic)
        pval.append(ref.pvalue)
    return np.array(stat), np.array(pval)


def corr_loop(a: np.ndarray, b: np.ndarray) -> float:
    ca = np.corrcoef(a, rowvar=False)
    cb = np.corrcoef(b, rowvar=False)
    return float(np.nanmax(np.abs(cb - ca)))


def timed(fn: Callable[[], Any]) -> tuple[tuple[float, float], Any]:
    """(wall seconds, CPU seconds of all threads) and the result."""
    wall, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return (time.perf_counter() - wall, time.process_time() - cpu), out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--features", type=int, default=50)
    parser.add_argument("--shifted", type=int, default=10)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    n, f = args.events, args.features
    rng = np.random.default_rng(args.seed)
    shift = np.zeros(f)
    shift[: args.shifted] = 0.005
    a = make_sample(rng, n, f, np.zeros(f))
    b = make_sample(rng, n, f, shift)
    print(f"{f} features x {n:,} events (float32) per sample, {args.shifted} features shifted")
    load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
    print(f"threads available: {stats._n_threads()}; load average before: {load}\n")

    rows = []
    t_ours, ks = timed(lambda: stats.ks_2samp(a, b))
    t_exact, ks_exact = timed(lambda: stats.ks_2samp(a, b, fast_tail=False))
    t_ref, (d_ref, p_ref) = timed(lambda: ks_loop(a, b))
    rows.append(("ks_2samp", t_ours, t_ref))
    rows.append(("ks_2samp(fast_tail=False)", t_exact, t_ref))
    ks_note = (
        f"KS: max |dD| = {np.abs(ks.statistic - d_ref).max():.1e}, max |dp| = "
        f"{np.abs(ks.pvalue - p_ref).max():.1e} (fast tail), "
        f"{np.abs(ks_exact.pvalue - p_ref).max():.1e} (exact tail)"
    )

    t_ours, chi = timed(lambda: stats.chi2_homogeneity(a, b))
    t_ref, (s_ref, cp_ref) = timed(lambda: chi2_loop(a, b))
    rows.append(("chi2_homogeneity", t_ours, t_ref))
    chi_note = (
        f"chi2: max rel |dstat| = {np.abs(chi.statistic / s_ref - 1).max():.1e}, "
        f"max |dp| = {np.abs(chi.pvalue - cp_ref).max():.1e}"
    )

    t_ours, corr = timed(lambda: stats.correlation_change(a, b))
    t_ref, max_ref = timed(lambda: corr_loop(a, b))
    rows.append(("correlation_change", t_ours, t_ref))
    corr_note = f"corr: |d max_abs| = {abs(corr.max_abs - max_ref):.1e}"

    print(f"{'':28s} {'robustcheck':>17s} {'per-feature loop':>17s} {'speed-up':>15s}")
    print(
        f"{'function':28s} {'wall s':>8s} {'cpu s':>8s} {'wall s':>8s} {'cpu s':>8s} "
        f"{'wall':>7s} {'cpu':>7s}"
    )
    for name, ours, ref in rows:
        print(
            f"{name:28s} {ours[0]:8.2f} {ours[1]:8.2f} {ref[0]:8.2f} {ref[1]:8.2f} "
            f"{ref[0] / ours[0]:6.1f}x {ref[1] / ours[1]:6.1f}x"
        )
    print()
    for note in (ks_note, chi_note, corr_note):
        print(note)
    print(f"load average after: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
