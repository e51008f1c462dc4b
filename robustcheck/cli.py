"""The ``robustcheck`` command: the same core as the pytest plugin, from a shell.

Each subcommand is a ``Command``: a function that adds its arguments and one that runs it.
A new subcommand is one more entry in ``COMMANDS``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robustcheck.errors import RobustcheckError

if TYPE_CHECKING:
    from robustcheck.baseline import Baseline
    from robustcheck.distributed import DaskRanges


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    arguments: Callable[[argparse.ArgumentParser], None]
    handler: Callable[[argparse.Namespace], int]


def _run_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("specs", nargs="+", help="robustness.toml/yaml files")
    parser.add_argument("--device", default=None, help="override [model] device")
    parser.add_argument("--seed", type=int, default=None, help="override every attack's seed")
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        metavar="N",
        help="torch CPU threads (default: torch's, one per core; on a shared or busy machine "
        "1 is often several times faster)",
    )
    parser.add_argument(
        "--report",
        default=None,
        metavar="DIR",
        help="write report.json, report.html and plots/ into DIR",
    )
    parser.add_argument(
        "--baseline",
        default=None,
        metavar="FILE",
        help="compare checks with no_regression = true against this baseline",
    )
    parser.add_argument(
        "--save-baseline",
        default=None,
        metavar="FILE",
        help="record every check's figures into this baseline file",
    )
    parser.add_argument(
        "--progress",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="a bar per attack with events done and time left on stderr (default: only when "
        "stderr is a terminal and CI is not set; --progress also into a log file)",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="print only errors and the summary table: no progress, no line per check",
    )
    parser.add_argument(
        "--dask",
        default=None,
        metavar="ADDRESS",
        help="spread event ranges (and several specs) over a Dask cluster: a scheduler "
        "address, a scheduler file (*.json) or local:N for N worker processes here (needs "
        "pytest-robustcheck[dask])",
    )


def run_command(args: argparse.Namespace) -> int:
    """Run every check of every spec; exit 0 when all pass, 1 when one fails, 2 on errors,
    130 when interrupted (Ctrl-C): then the checks that finished are reported as a partial
    run and the baseline file is left as it was."""
    from robustcheck.report.progress import configure as configure_progress

    configure_progress(False if args.quiet else args.progress)
    if args.threads is not None:
        if args.threads < 1:
            print("robustcheck: error: --threads must be at least 1", file=sys.stderr)
            return 2
        import torch

        torch.set_num_threads(args.threads)
    try:
        return _run_all(args)
    finally:
        configure_progress(None)  # main() may be called again in this process (tests)


def _run_all(args: argparse.Namespace) -> int:
    from robustcheck.baseline import Baseline
    from robustcheck.report.json import partial
    from robustcheck.report.terminal import render

    _check_baselines(args)
    records: list[dict[str, Any]] = []
    expected: dict[str, list[str]] = {}
    not_loaded: list[str] = []
    errors = 0
    interrupted: str | None = None
    recorder = Baseline(Path(args.save_baseline)) if args.save_baseline else None
    cluster = None
    if getattr(args, "dask", None):
        from robustcheck.distributed import DaskRanges

        try:
            cluster = DaskRanges.connect(args.dask)
        except RobustcheckError as exc:
            _print_error(exc)
            return 2
    try:
        if cluster is not None and len(args.specs) > 1:
            errors += _run_specs_at_once(args, records, expected, not_loaded, recorder, cluster)
        else:
            for path in args.specs:
                errors += _run_spec(path, args, records, expected, not_loaded, recorder, cluster)
    except KeyboardInterrupt:
        interrupted = "KeyboardInterrupt"
        print("\nrobustcheck: interrupted", file=sys.stderr)
    finally:
        if cluster is not None:
            cluster.close()
    run_partial = partial(expected, records, interrupted, not_loaded=not_loaded)
    if recorder is not None:
        errors += _save_baseline(recorder, interrupted)
    if records:
        width = shutil.get_terminal_size().columns
        print("\n" + render(records, width, partial=run_partial))
    if args.report and records:
        argv = ["robustcheck", "run", *_argv_tail(args)]
        _write_report(records, args.report, argv, run_partial)
    if interrupted:
        return 130
    if errors:
        return 2
    return 1 if any(r["verdict"] != "passed" for r in records) else 0


def _check_baselines(args: argparse.Namespace) -> None:
    """A --baseline or an existing --save-baseline file that is not a baseline stops the run
    before it starts (SpecError: exit 2), not after the checks have run."""
    from robustcheck.baseline import Baseline, read_entries

    save = Path(args.save_baseline) if args.save_baseline else None
    if save is not None and save.is_file():  # a folder or no file: said at the end
        read_entries(save, writing=True)
    if args.baseline:
        path = Path(args.baseline)
        if save is None or path.exists() or path.resolve() != save.resolve():
            Baseline.load(path)


def _save_baseline(recorder: Baseline, interrupted: str | None) -> int:
    """Merge this run's entries into the baseline file; the number of errors (0 or 1)."""
    path = recorder.path
    if interrupted:
        state = "is unchanged" if path.exists() else "was not created"
        print(f"robustcheck: baseline not written: the run was interrupted; {path} {state}")
        return 0
    if not recorder.entries:
        print(f"robustcheck: no check produced figures: the baseline {path} was not written")
        return 0
    try:
        outcome = recorder.save(_notice)
    except (OSError, RobustcheckError) as exc:
        print(f"robustcheck: cannot write the baseline {path}: {exc}", file=sys.stderr)
        return 1
    print(f"robustcheck: baseline written to {outcome.line()}")
    return 0


def _notice(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


def _run_specs_at_once(
    args: argparse.Namespace,
    records: list[dict[str, Any]],
    expected: dict[str, list[str]],
    not_loaded: list[str],
    recorder: Baseline | None,
    cluster: DaskRanges,
) -> int:
    """Several specs at once on a Dask cluster (the taggers of a Pareto study): each spec's
    checks run in a client thread of their own, whose ranges share the workers; each spec's
    verdicts are printed together, in the order the specs were given; the error count."""
    from concurrent.futures import ThreadPoolExecutor

    def one(
        path: str,
    ) -> tuple[int, list[str], list[dict[str, Any]], dict[str, list[str]], list[str]]:
        own: tuple[list[dict[str, Any]], dict[str, list[str]], list[str]] = ([], {}, [])
        lines: list[str] = []
        errors = _run_spec(path, args, *own, recorder, cluster, lines.append)
        return errors, lines, *own

    errors = 0
    with ThreadPoolExecutor(len(args.specs), thread_name_prefix="robustcheck-spec") as pool:
        for spec_errors, lines, spec_records, spec_expected, spec_not_loaded in pool.map(
            one, args.specs
        ):
            print("\n".join(lines), flush=True)
            errors += spec_errors
            records.extend(spec_records)
            expected.update(spec_expected)
            not_loaded.extend(spec_not_loaded)
    return errors


def _run_spec(
    path: str,
    args: argparse.Namespace,
    records: list[dict[str, Any]],
    expected: dict[str, list[str]],
    not_loaded: list[str],
    recorder: Baseline | None = None,
    cluster: DaskRanges | None = None,
    echo: Callable[[str], None] | None = None,
) -> int:
    """Run one spec's checks, printing each verdict and appending its records as they come
    (an interruption keeps those that finished); return the error count. With ``echo`` the
    verdicts go there, and no progress line is shown (specs running at once)."""
    from contextlib import nullcontext

    from robustcheck.core import SpecRun
    from robustcheck.report.data import SpecReportData, add_report_data
    from robustcheck.report.progress import progress as show_progress
    from robustcheck.report.records import check_record

    say = echo or print
    progress = show_progress if echo is None else (lambda label: nullcontext())

    try:
        run = SpecRun.from_path(
            path,
            device=args.device,
            seed=args.seed,
            baseline=Path(args.baseline) if args.baseline else None,
            record_to=recorder,
            cluster=cluster,
        )
    except RobustcheckError as exc:
        _print_error(exc)
        not_loaded.append(path)
        return 1
    data = SpecReportData(run) if args.report else None
    spec_path = str(run.spec.path)
    expected[spec_path] = [check.name for check in run.spec.checks]
    errors = 0
    loading: RobustcheckError | None = None
    started = time.perf_counter()
    try:
        with progress(f"{path}: loading the model and data, evaluating"):
            run.log_probs("nominal")
            run.sanity()  # a failed gate fails every check: said once, here
    except RobustcheckError as exc:
        loading = exc
        _print_error(exc)
    for check in run.spec.checks:
        if loading is not None:
            seconds = 0.0
            error = f"{loading.kind}: {loading}"
            record = check_record(spec_path, check, seconds, error=error, nominal=loading.nominal)
        else:
            try:
                attack = check.options.get("attack")
                with progress(f"{path}::{check.name}" + (f" (attack {attack})" if attack else "")):
                    result = run.run_check(check)
            except RobustcheckError as exc:
                seconds = time.perf_counter() - started
                record = check_record(spec_path, check, seconds, error=f"{exc.kind}: {exc}")
                _print_error(exc)
            except Exception as exc:  # a bug or an unforeseen failure: keep the other checks
                seconds = time.perf_counter() - started
                text = f"internal error in check {check.name!r}: {type(exc).__name__}: {exc}"
                record = check_record(spec_path, check, seconds, error=text)
                print(text, file=sys.stderr)
            else:
                seconds = time.perf_counter() - started
                record = check_record(spec_path, check, seconds, result=result)
                if not args.quiet:
                    say(f"{'PASSED' if result.passed else 'FAILED'} {path}::{result.name}")
                    say("  " + result.message().replace("\n", "\n  "))
        started = time.perf_counter()
        errors += record["verdict"] == "error"
        if data is not None:
            add_report_data(record, data, check)
        records.append(record)
    return errors


def _write_report(
    records: list[dict[str, Any]],
    folder: str,
    argv: list[str],
    partial: dict[str, Any] | None = None,
) -> None:
    from robustcheck.report.writer import write_report

    try:
        outcome = write_report(records, folder, " ".join(argv), partial, _notice)
    except Exception as exc:  # the report must never turn a run into a crash
        print(
            f"robustcheck report: cannot write {folder}: {type(exc).__name__}: {exc}",
            file=sys.stderr,
        )
        return
    if outcome.html is not None:
        print(f"robustcheck report: {outcome.html}")
    for problem in outcome.problems:
        print(f"robustcheck report: {problem}", file=sys.stderr)


def _argv_tail(args: argparse.Namespace) -> list[str]:
    out = list(args.specs)
    for flag in ("device", "seed", "report", "baseline", "save_baseline"):
        value = getattr(args, flag)
        if value is not None:
            out += [f"--{flag.replace('_', '-')}", str(value)]
    return out


def _print_error(exc: RobustcheckError) -> None:
    print(f"{exc.kind}: {exc}", file=sys.stderr)


def _validate_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("specs", nargs="+", help="robustness.toml/yaml files")


def validate_command(args: argparse.Namespace) -> int:
    """Check every spec and print every error of each, numbered; exit 2 if any has one."""
    from robustcheck.spec import check_spec, format_spec_errors

    failed = 0
    for path in args.specs:
        spec, errors = check_spec(path)
        if errors:
            failed += 1
            print(f"spec error: {format_spec_errors(errors, path)}", file=sys.stderr)
        elif spec is not None:
            print(f"{path}: ok ({len(spec.checks)} checks, {len(spec.attacks)} attacks)")
    return 2 if failed else 0


def _init_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help='model file (.onnx, .pt, .pt2) or "pkg.module:factory"')
    parser.add_argument("data", help="data file (.npz, .npy, .h5, .parquet, .root)")
    parser.add_argument(
        "-o", "--output", default="robustness.toml", help="spec to write (robustness.toml)"
    )
    parser.add_argument("--labels", default=None, help="array holding the class labels")
    parser.add_argument("--tree", default=None, help="tree name in a ROOT file")
    parser.add_argument("--force", action="store_true", help="overwrite an existing spec")


def init_command(args: argparse.Namespace) -> int:
    from robustcheck.scaffold import write_starting_spec

    path = write_starting_spec(
        args.model, args.data, args.output, labels=args.labels, tree=args.tree, force=args.force
    )
    print(f"wrote {path}: fill in its TODO lines, then run `robustcheck validate {path}`")
    return 0


def _schema_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--indent", type=int, default=2, help="JSON indentation (2)")


def schema_command(args: argparse.Namespace) -> int:
    from robustcheck.spec_schema import spec_json_schema

    print(json.dumps(spec_json_schema(), indent=args.indent))
    return 0


def _plugins_arguments(parser: argparse.ArgumentParser) -> None:
    del parser  # no options


def plugins_command(args: argparse.Namespace) -> int:
    """List every registered attack, check, tagger loader and data reader, with its origin."""
    from robustcheck import registry

    for kind in registry.KINDS:
        table = registry.table(kind)
        print(f"{kind.replace('_', ' ')}:")
        width = max((len(name) for name in table), default=0)
        for name, declaration in sorted(table.items()):
            print(f"  {name:<{width}}  [{declaration.origin}]  {declaration.doc}")
    return 0


def _pareto_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("specs", nargs="+", help="specs over the same nominal/alternative data")
    parser.add_argument("--device", default=None, help="override [model] device")
    parser.add_argument("--json", default=None, metavar="FILE", help="also write the table here")
    parser.add_argument(
        "--dask",
        default=None,
        metavar="ADDRESS",
        help="evaluate the specs at once on a Dask cluster (as for run --dask)",
    )


def pareto_command(args: argparse.Namespace) -> int:
    """AUC and resilience of each spec's tagger, and the AUC/resilience Pareto frontier."""
    from robustcheck.pareto import pareto_json, pareto_of_specs, pareto_table

    if args.dask:
        from robustcheck.distributed import DaskRanges

        with DaskRanges.connect(args.dask) as cluster:
            rows = pareto_of_specs(args.specs, device=args.device, cluster=cluster)
    else:
        rows = pareto_of_specs(args.specs, device=args.device)
    print("\n".join(pareto_table(rows)))
    if args.json:
        Path(args.json).write_text(json.dumps(pareto_json(rows), indent=2))
        print(f"wrote {args.json}")
    return 0


COMMANDS: list[Command] = [
    Command(
        "run",
        "run every check of the given specs (exit 1 on failure)",
        _run_arguments,
        run_command,
    ),
    Command(
        "validate", "check specs against the schema (fast)", _validate_arguments, validate_command
    ),
    Command(
        "init", "write a starting spec for a model and its data", _init_arguments, init_command
    ),
    Command(
        "schema", "print the spec's JSON Schema (for editors)", _schema_arguments, schema_command
    ),
    Command(
        "pareto",
        "AUC, resilience and the Pareto frontier of several taggers",
        _pareto_arguments,
        pareto_command,
    ),
    Command(
        "plugins",
        "list registered attacks, checks, loaders and readers",
        _plugins_arguments,
        plugins_command,
    ),
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="robustcheck", description="robustness gates for ML taggers"
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        child = sub.add_parser(command.name, help=command.help, description=command.help)
        command.arguments(child)
        child.set_defaults(handler=command.handler)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except RobustcheckError as exc:
        _print_error(exc)
        return 2
    except KeyboardInterrupt:
        print("robustcheck: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
