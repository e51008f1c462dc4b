"""False-alarm rate of the invariance check's p-value tests on samples that did not change.

    python benchmarks/invariance_calibration.py [--repetitions 20000] [--features 10]
        [--events 2000] [--alpha 0.01] [--correlation 0.3] [--bins 20] [--seed 1]
        [--correlation-tests]

Each repetition draws two independent samples of one distribution: ``features - 1`` Gaussians
with pairwise correlation ``--correlation`` and one log-normal (skewed) feature. Every feature
gets the check's two-sample KS and binned chi-squared p-values (``robustcheck.stats``, the
functions the check calls, on all repetitions at once), and the check's decision
(``robustcheck.checks.invariance.pvalue_tests``) with ``ks_min_pvalue = chi2_min_pvalue =
alpha`` says whether the whole check fails. An unchanged sample should fail it at most a
fraction ``alpha`` of the time. Printed: that false-alarm rate with its 95% Clopper-Pearson
interval for ``correction = "holm"`` and ``"none"``; for Holm applied within the KS tests and
within the chi-squared tests separately (not what the check does: each kind would spend the
whole threshold); and the rate of a single test at alpha and at the first Holm step alpha / m,
which shows how conservative each p-value is. With ``--correlation-tests`` the z test of every
pair's correlation (``corr_min_pvalue``, distribution-free variance) joins the family, as in a
check that sets all three thresholds.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from robustcheck.checks.invariance import CORRECTIONS, pvalue_tests
from robustcheck.invariance_stats import correlation_variance
from robustcheck.stats import chi2_homogeneity, clopper_pearson, ks_2samp


def null_pair(
    rng: np.random.Generator, repetitions: int, events: int, features: int, correlation: float
) -> tuple[np.ndarray, np.ndarray]:
    """Two independent samples of one distribution per repetition, as (events, repetitions *
    features) float32 columns: repetition r holds columns r * features ... (r + 1) * features."""
    gaussians = features - 1
    cov = np.full((gaussians, gaussians), correlation) + (1.0 - correlation) * np.eye(gaussians)
    chol = np.linalg.cholesky(cov).astype(np.float32)

    def draw() -> np.ndarray:
        x = np.empty((events, repetitions, features), dtype=np.float32)
        z = rng.standard_normal((events, repetitions, gaussians), dtype=np.float32)
        x[..., :gaussians] = z @ chol.T
        x[..., gaussians] = np.exp(rng.standard_normal((events, repetitions), dtype=np.float32))
        return x.reshape(events, repetitions * features)

    return draw(), draw()


def null_pvalues(
    rng: np.random.Generator,
    repetitions: int,
    events: int,
    features: int,
    correlation: float,
    bins: int,
    correlation_tests: bool = False,
) -> dict[str, np.ndarray]:
    """KS and chi-squared p-values (repetitions, features) of unchanged samples, and with
    ``correlation_tests`` the pairs' z tests (repetitions, pairs)."""
    a, b = null_pair(rng, repetitions, events, features, correlation)
    out = {
        "ks": ks_2samp(a, b).pvalue.reshape(repetitions, features),
        "chi2": chi2_homogeneity(a, b, bins=bins).pvalue.reshape(repetitions, features),
    }
    if correlation_tests:
        out["corr"] = pair_pvalues(a, b, repetitions, features)
    return out


def pair_pvalues(a: np.ndarray, b: np.ndarray, repetitions: int, features: int) -> np.ndarray:
    """The invariance check's z test of every pair's correlation, per repetition."""
    from scipy.stats import norm

    upper = np.triu_indices(features, 1)
    out = np.empty((repetitions, len(upper[0])))
    for r in range(repetitions):
        cols = slice(r * features, (r + 1) * features)
        r_a, v_a = correlation_variance(a[:, cols].astype(np.float64))
        r_b, v_b = correlation_variance(b[:, cols].astype(np.float64))
        z = (r_b - r_a)[upper] / np.sqrt((v_a + v_b)[upper] / len(a))
        out[r] = 2.0 * norm.sf(np.abs(z))
    return out


def rate_line(label: str, k: int, n: int) -> str:
    low, high = clopper_pearson(k, n)
    return f"{label:<44} {k:>6} / {n:<7} {100 * k / n:6.2f}%  [{100 * low:.2f}%, {100 * high:.2f}%]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repetitions", type=int, default=20_000)
    parser.add_argument("--features", type=int, default=10)
    parser.add_argument("--events", type=int, default=2000, help="events per sample")
    parser.add_argument("--alpha", type=float, default=0.01, help="ks_min_pvalue = chi2_min_pvalue")
    parser.add_argument("--correlation", type=float, default=0.3)
    parser.add_argument("--bins", type=int, default=20)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--chunk", type=int, default=1000, help="repetitions per batch")
    parser.add_argument(
        "--correlation-tests", action="store_true", help="add the pairs' correlation z tests"
    )
    args = parser.parse_args()
    if args.features < 2:
        parser.error("--features must be at least 2 (Gaussians and one skewed feature)")

    rng = np.random.default_rng(args.seed)
    thresholds = {"ks": args.alpha, "chi2": args.alpha}
    if args.correlation_tests:
        thresholds["corr"] = args.alpha
    alarms = dict.fromkeys((*CORRECTIONS, "separate"), 0)
    m = 2 * args.features + (
        args.features * (args.features - 1) // 2 if args.correlation_tests else 0
    )
    single = {kind: [0, 0, 0] for kind in thresholds}  # p < alpha, p < alpha / m, tests
    start = time.perf_counter()
    done = 0
    while done < args.repetitions:
        size = min(args.chunk, args.repetitions - done)
        pvalues = null_pvalues(
            rng,
            size,
            args.events,
            args.features,
            args.correlation,
            args.bins,
            args.correlation_tests,
        )
        for correction in CORRECTIONS:
            tests = pvalue_tests(pvalues, thresholds, correction)
            alarms[correction] += int(tests.alarm().sum())
        # the road not taken: Holm within each kind, every kind at the full threshold
        separate = [pvalue_tests({k: p}, thresholds, "holm").alarm() for k, p in pvalues.items()]
        alarms["separate"] += int(np.logical_or.reduce(separate).sum())
        for kind, p in pvalues.items():
            single[kind][0] += int((p < args.alpha).sum())
            single[kind][1] += int((p < args.alpha / m).sum())
            single[kind][2] += p.size
        done += size
    seconds = time.perf_counter() - start

    n = args.repetitions
    print(
        f"{n:,} repetitions of two independent samples of {args.events:,} events, "
        f"{args.features} features ({args.features - 1} Gaussians with correlation "
        f"{args.correlation:g}, 1 log-normal), {args.bins} chi2 bins, seed {args.seed}; "
        f"{m} tests per check, thresholds {args.alpha:g}; {seconds:.1f} s"
    )
    print(f"{'':<44} {'alarms':>6} / {'checks':<7} {'rate':>7}  95% CL")
    print(rate_line('whole check, correction = "holm"', alarms["holm"], n))
    print(rate_line('whole check, correction = "none"', alarms["none"], n))
    within = "each kind" if args.correlation_tests else "KS and within chi2"
    print(rate_line(f"whole check, Holm within {within}", alarms["separate"], n))
    for kind, (at_alpha, at_step, tests) in single.items():
        name = {"ks": "KS", "chi2": "chi2", "corr": "corr z"}[kind]
        print(rate_line(f"single {name} test, p < {args.alpha:g}", at_alpha, tests))
        print(rate_line(f"single {name} test, p < {args.alpha / m:.3g}", at_step, tests))


if __name__ == "__main__":
    main()
