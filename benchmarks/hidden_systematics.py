"""Plain PGD against constrained_pgd on the quickstart's hidden-systematics spec.

For each attack (and constrained_pgd's penalty variants) prints the fooling rate with its
95% interval and the smallest ``events_to_detect`` per region (all, each true class,
high_score) under the spec's constrained invariance check settings (by_class, regions,
independent halves), and whether that check passes at the spec's statistics and at
``control_region_events = 1e6``.

    PYTHONPATH=$PWD python3 benchmarks/hidden_systematics.py [--epsilon 3] [--steps 20]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import tomllib
import torch

from robustcheck.core import SpecRun
from robustcheck.spec import parse_spec

SPEC = Path(__file__).resolve().parent.parent / "examples/quickstart/hidden_systematics.robust.toml"


def variants(epsilon: float, steps: int, extra: list[float]) -> dict[str, dict]:
    base = {"epsilon": epsilon, "steps": steps, "seed": 1}
    return {
        "pgd": {"method": "pgd", **base},
        "constrained (inclusive only)": {
            "method": "constrained_pgd",
            **base,
            "lambda_dist": 1.0,
            "lambda_class": 0.0,
        },
        "constrained (default)": {"method": "constrained_pgd", **base},
        **{
            f"constrained (lambda_class={w:g})": {
                "method": "constrained_pgd",
                **base,
                "lambda_class": w,
            }
            for w in extra
        },
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--epsilon", type=float, default=3.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument(
        "--lambda-class", type=float, nargs="*", default=[], help="more weights to try"
    )
    args = parser.parse_args()
    torch.set_num_threads(1)
    doc = tomllib.loads(SPEC.read_text())
    hidden_check = next(
        c for c in doc["checks"] if c.get("attack") == "hidden" and c["type"] == "invariance"
    )
    for label, table in variants(args.epsilon, args.steps, args.lambda_class).items():
        doc["attacks"] = {"a": table}
        check = {**hidden_check, "attack": "a", "name": "inv"}
        check.pop("control_region_events", None)
        big = {**check, "name": "inv1e6", "control_region_events": 1e6}
        rate = {"type": "fooling_rate", "attack": "a", "max": 1.0, "name": "rate"}
        doc["checks"] = [rate, check, big]
        started = time.perf_counter()
        run = SpecRun(parse_spec(doc, SPEC), device="cpu")
        results = {r.name: r for r in run.run()}
        seconds = time.perf_counter() - started
        f = results["rate"].figures
        inv = results["inv"].figures
        print(f"== {label}: {seconds:.1f} s")
        print(
            f"  fooling rate {f['fooling_rate']:.4f} ({f['ci_low']:.3f}-{f['ci_high']:.3f}), "
            f"{f['n_fooled']} of {f['n_events']} correct decisions flip"
        )
        print(
            f"  invariance at spec statistics: {'passes' if results['inv'].passed else 'fails'}; "
            f"at 1e6: {'passes' if results['inv1e6'].passed else 'fails'}"
        )
        print(
            f"  smallest events_to_detect {inv.get('events_to_detect'):,.0f} "
            f"({inv.get('events_to_detect_test')})"
        )
        best: dict[str, tuple[float, str]] = {}
        for key, value in inv.items():
            if key.startswith("events_to_detect/"):
                _, kind, region, feature = key.split("/", 3)
                if isinstance(value, (int, float)) and (
                    region not in best or value < best[region][0]
                ):
                    best[region] = (value, f"{kind} {feature}")
        for region, (n, where) in sorted(best.items()):
            print(f"    {region:12s} {n:>12,.0f}  ({where})")


if __name__ == "__main__":
    main()
