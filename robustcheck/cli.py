"""The ``robustcheck`` command: the same core as the pytest plugin, from a shell."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from robustcheck.errors import RobustcheckError


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="robustcheck", description="robustness gates for ML taggers"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run every check of the given specs (exit 1 on failure)")
    run.add_argument("specs", nargs="+", help="robustness.toml/yaml files")
    run.add_argument("--device", default=None, help="override [model] device")
    run.add_argument("--seed", type=int, default=None, help="override every attack's seed")
    validate = sub.add_parser("validate", help="check specs against the schema (fast)")
    validate.add_argument("specs", nargs="+")
    args = parser.parse_args(argv)
    try:
        if args.command == "validate":
            return _validate(args.specs)
        return _run(args.specs, args.device, args.seed)
    except RobustcheckError as exc:
        print(f"{exc.kind}: {exc}", file=sys.stderr)
        return 2


def _validate(paths: list[str]) -> int:
    from robustcheck.spec import load_spec

    for path in paths:
        spec = load_spec(path)
        print(f"{path}: ok ({len(spec.checks)} checks, {len(spec.attacks)} attacks)")
    return 0


def _run(paths: list[str], device: str | None, seed: int | None) -> int:
    from robustcheck.core import SpecRun

    failed = 0
    for path in paths:
        run = SpecRun.from_path(path, device=device, seed=seed)
        for check in run.spec.checks:
            result = run.run_check(check)
            failed += not result.passed
            print(f"{'PASSED' if result.passed else 'FAILED'} {path}::{result.name}")
            print("  " + result.message().replace("\n", "\n  "))
    return 1 if failed else 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
