"""pytest plugin: collects robustness specs as test items; ``--robustcheck`` runs them.

Only pytest hooks live here. torch, onnxruntime and scipy are imported when a spec item
runs, never when pytest loads this plugin; matplotlib only when a report is written.

Each check item leaves a JSON record on its test report (``report.robustcheck``). pytest-xdist
sends reports from its workers to the controller, so the controller sees every record once and
prints the summary table and writes the report (plots included) from them alone.
"""

from __future__ import annotations

import re
import time
from collections.abc import Generator, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from robustcheck.spec.names import is_spec_file  # light: the package imports no torch/numpy

if TYPE_CHECKING:
    from robustcheck.core import SpecRun
    from robustcheck.report.data import SpecReportData
    from robustcheck.report.writer import ReportOutcome
    from robustcheck.result import CheckResult
    from robustcheck.spec import CheckSpec

SKIP_REASON = "robustness checks run only with --robustcheck (or ini option robustcheck = true)"
RECORD_ATTRIBUTE = "robustcheck"
MARKER = "robustcheck: a check of a robustness spec (select them with -m robustcheck)"


@dataclass(frozen=True)
class Option:
    """A command-line flag ``--NAME`` (dashes) and, with ``ini``, the ini key ``NAME``
    (underscores): one name stem, read through :func:`get_option`."""

    name: str  # the stem with underscores: the ini key, and the flag's dest
    help: str
    metavar: str | None = None
    kind: str = "string"  # string | int | bool | path
    ini: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


OPTIONS = (
    Option(
        "robustcheck",
        "run the checks of robustness.toml/yaml and *.robust.toml/yaml specs",
        kind="bool",
    ),
    Option(
        "robustcheck_device",
        "device for every spec, overriding [model] device (cpu, cuda, cuda:N)",
        "DEVICE",
    ),
    Option("robustcheck_seed", "seed for every attack, overriding the specs' seeds", "SEED", "int"),
    Option(
        "robustcheck_report",
        "write report.json, report.html and plots/ of the checks into DIR",
        "DIR",
        "path",
    ),
    Option(
        "robustcheck_baseline",
        "compare checks with no_regression = true against this baseline file",
        "FILE",
        "path",
    ),
    Option(
        "robustcheck_progress",
        "a bar per attack on stderr with events done and time left; pytest captures stderr, "
        "so the bars show with -s on a terminal (never in pytest-xdist workers)",
        kind="bool",
    ),
    # No ini key: saving a baseline is an action, not a setting. From a config file it would
    # rewrite the reference on every run, so a regression would become the new baseline
    # without anyone asking for it; it is asked for on the command line, once.
    Option(
        "robustcheck_save_baseline",
        "record every check's figures, seeds and fingerprints into this baseline file",
        "FILE",
        "path",
        ini=False,
    ),
    Option(
        "robustcheck_dask",
        "spread the specs' event ranges over a Dask cluster: a scheduler address, a scheduler "
        "file (*.json) or local:N for N worker processes here (needs pytest-robustcheck[dask])",
        "ADDRESS",
    ),
)
_BY_NAME = {option.name: option for option in OPTIONS}


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("robustcheck", "robustness checks of ML taggers")
    for option in OPTIONS:
        ini = f" (ini key: {option.name})" if option.ini else ""
        if option.kind == "bool":
            group.addoption(option.flag, action="store_true", default=None, help=option.help + ini)
        else:
            group.addoption(
                option.flag,
                type=int if option.kind == "int" else str,
                default=None,
                metavar=option.metavar,
                help=option.help + ini,
            )
        if option.ini:
            parser.addini(
                option.name,
                type="bool" if option.kind == "bool" else "string",
                default=False if option.kind == "bool" else "",
                help=f"{option.help}, as with {option.flag}",
            )


def _from_ini(config: pytest.Config, option: Option) -> Any:
    """The ini key's value, None when it is not set."""
    if not option.ini:
        return None
    value = config.getini(option.name)
    if option.kind == "bool":
        return bool(value)
    text = str(value).strip()
    if not text:
        return None
    if option.kind == "int":
        try:
            return int(text)
        except ValueError:
            raise pytest.UsageError(
                f"ini key {option.name} = {text!r}: must be an integer"
            ) from None
    return text


def get_option(config: pytest.Config, name: str) -> Any:
    """The flag's value when it is given, else the ini key's (None when neither is set).

    Paths come back as given; :func:`option_path` resolves them.
    """
    option = _BY_NAME[name]
    value = config.getoption(name)
    if value is not None and value is not False:
        return value
    return _from_ini(config, option)


def option_path(config: pytest.Config, name: str) -> Path | None:
    """A path option, resolved: a flag's relative to the folder pytest was started in, an ini
    key's relative to the ini file's folder (the root folder when there is no ini file)."""
    value = config.getoption(name)
    if value:
        return config.invocation_params.dir / value
    value = _from_ini(config, _BY_NAME[name])
    if not value:
        return None
    folder = config.inipath.parent if config.inipath is not None else config.rootpath
    return folder / value


def enabled(config: pytest.Config) -> bool:
    return bool(get_option(config, "robustcheck"))


def report_dir(config: pytest.Config) -> Path | None:
    """The report folder from the flag or the ini key (see :func:`option_path`)."""
    return option_path(config, "robustcheck_report")


def is_xdist_worker(config: pytest.Config) -> bool:
    return hasattr(config, "workerinput")


SUMMARY_PLUGIN = "robustcheck-summary"
WORKER_OUTPUT = "robustcheck_collected"  # key of config.workeroutput under pytest-xdist


def pytest_configure(config: pytest.Config) -> None:
    for option in OPTIONS:  # a bad ini value stops the session before collection
        get_option(config, option.name)
    config.addinivalue_line("markers", MARKER)
    config.pluginmanager.register(RunSummary(config), SUMMARY_PLUGIN)
    if get_option(config, "robustcheck_progress"):
        from robustcheck.report.progress import configure

        configure(True)
    if enabled(config) and get_option(config, "robustcheck_dask"):
        from robustcheck.distributed import DaskError, require_dask

        try:
            require_dask("--robustcheck-dask")
        except DaskError as exc:
            raise pytest.UsageError(str(exc)) from None


HOOK_NAMES = (
    "robustcheck_attacks",
    "robustcheck_checks",
    "robustcheck_tagger_loaders",
    "robustcheck_data_readers",
    "robustcheck_adjust_spec",
)
_CONFTEST_PLUGINS: list[object] = []


def pytest_plugin_registered(plugin: object, plugin_name: str) -> None:
    """A conftest.py (or any pytest plugin) that implements robustcheck hooks extends it."""
    if any(callable(getattr(plugin, name, None)) for name in HOOK_NAMES):
        from robustcheck import registry

        registry.register(plugin, name=f"pytest:{plugin_name}")
        _CONFTEST_PLUGINS.append(plugin)


CLUSTER_KEY = pytest.StashKey[Any]()


def dask_cluster(config: pytest.Config) -> Any:
    """The session's Dask client (robustcheck.distributed.DaskRanges), connected or started
    when the first spec runs; None without ``--robustcheck-dask``."""
    address = get_option(config, "robustcheck_dask")
    if not address:
        return None
    if CLUSTER_KEY not in config.stash:
        from robustcheck.distributed import DaskRanges

        config.stash[CLUSTER_KEY] = DaskRanges.connect(address, "--robustcheck-dask")
    return config.stash[CLUSTER_KEY]


def pytest_unconfigure(config: pytest.Config) -> None:
    if get_option(config, "robustcheck_progress"):
        from robustcheck.report.progress import configure

        configure(None)
    cluster = config.stash.get(CLUSTER_KEY, None)
    if cluster is not None:
        cluster.close()
        del config.stash[CLUSTER_KEY]
    if _CONFTEST_PLUGINS:
        from robustcheck import registry

        while _CONFTEST_PLUGINS:
            registry.unregister(_CONFTEST_PLUGINS.pop())


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if is_spec_file(file_path):
        return SpecFile.from_parent(parent, path=file_path)
    return None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, Any, None]:
    """Attach the check's record to its call report, as a string that xdist can carry."""
    outcome = yield
    record = getattr(item, "record", None)
    if call.when == "call" and isinstance(item, SpecItem) and record is not None:
        from robustcheck.report.records import dumps

        setattr(outcome.get_result(), RECORD_ATTRIBUTE, dumps(record))


class CheckFailed(Exception):
    """A check ran and its assertion does not hold."""

    def __init__(self, result: CheckResult) -> None:
        super().__init__(result.summary)
        self.result = result


class SpecFile(pytest.File):
    """One spec file; one item per [[checks]] entry."""

    _run: SpecRun | None = None
    _report_data: SpecReportData | None = None

    def collect(self) -> Iterator[pytest.Item]:
        from robustcheck.errors import RobustcheckError
        from robustcheck.spec import load_spec

        try:
            spec = load_spec(self.path)
        except RobustcheckError as exc:
            if enabled(self.config):
                raise
            # without --robustcheck a broken spec must not block an unrelated test run
            yield BrokenSpecItem.from_parent(self, name="spec", problem=f"{exc.kind}: {exc}")
            return
        summary = self.config.pluginmanager.get_plugin(SUMMARY_PLUGIN)
        if isinstance(summary, RunSummary):  # every check counts as collected, selected or not
            summary.expected[str(self.path)] = [check.name for check in spec.checks]
        for check, item_id in zip(spec.checks, item_ids(c.name for c in spec.checks), strict=True):
            item = SpecItem.from_parent(self, name=item_id, check=check)
            item.add_marker(pytest.mark.robustcheck)
            yield item

    def spec_run(self) -> SpecRun:
        """The shared run of this spec: model, data and attacks are computed once."""
        if self._run is None:
            from robustcheck.core import SpecRun

            recorder = None
            save = option_path(self.config, "robustcheck_save_baseline")
            if save is not None:
                from robustcheck.baseline import Baseline

                recorder = Baseline(save)
            self._run = SpecRun.from_path(
                self.path,
                device=get_option(self.config, "robustcheck_device"),
                seed=get_option(self.config, "robustcheck_seed"),
                baseline=option_path(self.config, "robustcheck_baseline"),
                record_to=recorder,
                cluster=dask_cluster(self.config),
            )
        return self._run

    def report_data(self) -> SpecReportData:
        """Histograms, ROC curves and hashes of this spec's run, for the report."""
        if self._report_data is None:
            from robustcheck.report.data import SpecReportData

            self._report_data = SpecReportData(self.spec_run())
        return self._report_data

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> Any:
        from robustcheck.errors import RobustcheckError

        if isinstance(excinfo.value, RobustcheckError):
            return f"{excinfo.value.kind}: {excinfo.value}"
        return super().repr_failure(excinfo)


def item_ids(names: Iterable[str]) -> list[str]:
    """Test ids of a spec's checks: each name with every run of characters other than
    letters, digits, ``.``, ``+`` and ``-`` replaced by ``_`` (``fooling rate within 1 sigma``
    -> ``fooling_rate_within_1_sigma``), so that ``-k`` takes it as one word; ``_2``, ``_3``
    ... where two names give one id. Ids depend only on the names and their order."""
    ids: list[str] = []
    for number, name in enumerate(names, start=1):
        base = re.sub(r"[^\w.+-]+", "_", name).strip("_") or f"check_{number}"
        candidate, copy = base, 1
        while candidate in ids:
            copy += 1
            candidate = f"{base}_{copy}"
        ids.append(candidate)
    return ids


class BrokenSpecItem(pytest.Item):
    """A spec that cannot be read, collected without --robustcheck: one skipped item that
    names the problem (with --robustcheck the spec is a collection error instead)."""

    def __init__(self, *, problem: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.problem = problem
        self.add_marker(pytest.mark.robustcheck)

    def runtest(self) -> None:
        pytest.skip(f"broken robustness spec, not run without --robustcheck: {self.problem}")

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, "robustness spec"


class SpecItem(pytest.Item):
    """One check of a spec; its id is :func:`item_ids`' form of the check's name, which the
    robustcheck summary and report show as written."""

    def __init__(self, *, check: CheckSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check
        self.record: dict[str, Any] | None = None

    def setup(self) -> None:
        if not enabled(self.config):
            pytest.skip(SKIP_REASON)

    def runtest(self) -> None:
        from robustcheck.report.records import check_record

        assert isinstance(self.parent, SpecFile)
        started = time.perf_counter()
        spec_path = str(self.parent.path)
        try:
            result = self.parent.spec_run().run_check(self.check)
        except Exception as exc:
            seconds = time.perf_counter() - started
            self.record = check_record(
                spec_path,
                self.check,
                seconds,
                error=_error_text(exc),
                nominal=getattr(exc, "nominal", None),  # a failed sanity gate's figures
            )
            self._add_report_data()
            self._add_baseline_entry()
            raise
        seconds = time.perf_counter() - started
        self.record = check_record(spec_path, self.check, seconds, result=result)
        self._add_report_data()
        self._add_baseline_entry()
        self.user_properties.extend(result.properties())
        if not result.passed:
            raise CheckFailed(result)

    def _add_report_data(self) -> None:
        """With a report folder: the spec's hashes and ROC curves, and the check's attack."""
        if self.record is None or report_dir(self.config) is None:
            return
        from robustcheck.report.data import add_report_data

        assert isinstance(self.parent, SpecFile)
        add_report_data(self.record, self.parent.report_data(), self.check)

    def _add_baseline_entry(self) -> None:
        """With --robustcheck-save-baseline: the raw figures travel in the record (xdist)."""
        assert isinstance(self.parent, SpecFile) and self.record is not None
        run = self.parent.spec_run()
        if run.record_to is None or self.parent._run is None:
            return
        from robustcheck.baseline import spec_key

        key = spec_key(run.spec, run.record_to.path)
        entry = run.record_to.entries.get(key, {}).get(self.check.name)
        if entry is not None:
            self.record["baseline_entry"] = {"spec": key, "check": self.check.name, "entry": entry}

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from robustcheck.errors import RobustcheckError

        if isinstance(excinfo.value, CheckFailed):
            return excinfo.value.result.message()
        if isinstance(excinfo.value, RobustcheckError):
            return f"{excinfo.value.kind}: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.check.name


def _error_text(exc: BaseException) -> str:
    from robustcheck.errors import RobustcheckError

    if isinstance(exc, RobustcheckError):
        return f"{exc.kind}: {exc}"
    return f"{type(exc).__name__}: {exc}"


class RunSummary:
    """Gathers check records from the reports (from xdist workers too), then prints the
    summary table and writes the report and the baseline on the controller.

    A run is *partial* when not every check of the collected spec files ran: a ``-k``/``-m``
    selection, node ids, an interruption. It is *interrupted* when pytest was interrupted
    (Ctrl-C, ``pytest.exit``, collection errors, an internal error) or stopped early
    (``-x``/``--maxfail``) before every selected check ran. The report of a partial run says
    so at its top; an interrupted run writes nothing into the baseline file, not even the
    entries of the checks that finished, and says so.
    """

    def __init__(self, config: pytest.Config) -> None:
        self.config = config
        self.records: dict[str, dict[str, Any]] = {}
        self.expected: dict[str, list[str]] = {}  # spec path -> names of its checks
        self.deselected: set[tuple[str, str]] = set()
        self.interrupted: str | None = None
        self.partial: dict[str, Any] | None = None
        self.report: ReportOutcome | None = None
        self.baseline_written: str | None = None
        self.baseline_problem: str | None = None

    def pytest_sessionstart(self, session: pytest.Session) -> None:
        """A --robustcheck-baseline or an existing --robustcheck-save-baseline file that is not
        a baseline stops the session before any check runs, naming the file and the fix."""
        if not enabled(self.config) or is_xdist_worker(self.config):
            return
        save = option_path(self.config, "robustcheck_save_baseline")
        compare = option_path(self.config, "robustcheck_baseline")
        from robustcheck.baseline import Baseline, read_entries
        from robustcheck.errors import RobustcheckError

        try:
            if save is not None and save.is_file():  # a folder or no file: said at the end
                read_entries(save, writing=True)
            if compare is not None and (save is None or compare.exists() or compare != save):
                Baseline.load(compare)
        except RobustcheckError as exc:
            raise pytest.UsageError(f"{exc.kind}: {exc}") from None

    def pytest_runtest_logreport(self, report: pytest.TestReport) -> None:
        text = getattr(report, RECORD_ATTRIBUTE, None)
        if report.when == "call" and isinstance(text, str):
            from robustcheck.report.records import loads

            self.records[report.nodeid] = loads(text)

    def pytest_deselected(self, items: list[pytest.Item]) -> None:
        for item in items:
            if isinstance(item, SpecItem):
                self.deselected.add((str(item.path), item.check.name))

    def pytest_keyboard_interrupt(self, excinfo: pytest.ExceptionInfo[BaseException]) -> None:
        value = excinfo.value
        if isinstance(value, pytest.exit.Exception):
            self.interrupted = f"pytest.exit: {value.msg}"
        elif type(value).__name__ == "Interrupted" and str(value):  # e.g. collection errors
            self.interrupted = str(value)
        else:
            self.interrupted = excinfo.typename

    @pytest.hookimpl(optionalhook=True)
    def pytest_testnodedown(self, node: Any, error: Any) -> None:
        """pytest-xdist: the controller learns from each worker what it collected."""
        text = (getattr(node, "workeroutput", None) or {}).get(WORKER_OUTPUT)
        if not text:
            return
        import json

        data = json.loads(text)
        for spec, names in data["expected"].items():
            self.expected.setdefault(spec, names)
        self.deselected.update((spec, name) for spec, name in data["deselected"])

    def pytest_sessionfinish(self, session: pytest.Session, exitstatus: int) -> None:
        if is_xdist_worker(self.config):
            import json

            self.config.workeroutput[WORKER_OUTPUT] = json.dumps(  # type: ignore[attr-defined]
                {"expected": self.expected, "deselected": sorted(self.deselected)}
            )
            return
        if not enabled(self.config):
            return
        self.partial = self._partial(session, exitstatus)
        try:
            self._write_report()
        finally:
            self._save_baseline()

    def _partial(self, session: pytest.Session, exitstatus: int) -> dict[str, Any] | None:
        from robustcheck.report.json import partial

        records = list(self.records.values())
        ran = {(r["spec"], r["name"]) for r in records}
        collected = {(spec, name) for spec, names in self.expected.items() for name in names}
        deselected = len(self.deselected & (collected - ran))
        not_run = len(collected - ran) - deselected
        interrupted = self.interrupted
        if interrupted is None and exitstatus == pytest.ExitCode.INTERNAL_ERROR:
            interrupted = "internal error"
        elif interrupted is None and exitstatus == pytest.ExitCode.INTERRUPTED:
            interrupted = "interrupted"
        stop = session.shouldfail or session.shouldstop
        if interrupted is None and stop and not_run:
            interrupted = f"stopped early: {stop}" if isinstance(stop, str) else "stopped early"
        why = [f"{deselected} deselected (-k, -m or --deselect)"] if deselected else []
        if not_run:
            why.append(f"{not_run} not selected or not run")
        return partial(self.expected, records, interrupted, "; ".join(why))

    def _notice(self, text: str) -> None:
        """A line in the terminal while the session finishes (waiting for a lock)."""
        reporter = self.config.pluginmanager.get_plugin("terminalreporter")
        if reporter is not None:
            reporter.write_line(text, yellow=True)

    def _write_report(self) -> None:
        folder = report_dir(self.config)
        if folder is None or not self.records:
            return
        from robustcheck.report.writer import ReportOutcome, write_report

        command = " ".join(["pytest", *self.config.invocation_params.args])
        try:
            self.report = write_report(
                self.records.values(), folder, command, self.partial, self._notice
            )
        except Exception as exc:  # the report must never turn a run into a crash
            self.report = ReportOutcome(folder)
            self.report.problems.append(
                f"cannot write the report to {folder}: {type(exc).__name__}: {exc}"
            )

    def _save_baseline(self) -> None:
        path = option_path(self.config, "robustcheck_save_baseline")
        if path is None:
            return
        if self.partial is not None and self.partial["interrupted"]:
            state = "is unchanged" if path.exists() else "was not created"
            self.baseline_problem = (
                f"not written: the run was interrupted ({self.partial['reason']}); {path} {state}"
            )
            return
        from robustcheck.baseline import Baseline
        from robustcheck.errors import RobustcheckError

        baseline = Baseline(path)
        for record in self.records.values():
            item = record.get("baseline_entry")
            if item:
                baseline.entries.setdefault(item["spec"], {})[item["check"]] = item["entry"]
        if not baseline.entries:
            if self.records:
                self.baseline_problem = f"no check produced figures: {path} was not written"
            return
        try:
            self.baseline_written = baseline.save(self._notice).line()
        except (OSError, RobustcheckError) as exc:  # never turn a run into a crash
            self.baseline_problem = f"cannot write the baseline {path}: {exc}"

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if is_xdist_worker(self.config):
            return
        folder = report_dir(self.config)
        writer = terminalreporter
        if not self.records:
            collect_only = self.config.getoption("collectonly", False)
            if folder is not None and enabled(self.config) and not collect_only:
                writer.write_line(
                    f"robustcheck: no check ran, so no report was written to {folder}",
                    yellow=True,
                )
            if self.baseline_problem is not None:
                writer.write_line(f"robustcheck baseline: {self.baseline_problem}", yellow=True)
            return
        from robustcheck.report.terminal import lines, partial_line, spec_lines, totals_line

        writer.write_sep("=", "robustcheck summary")
        records = list(self.records.values())
        width = getattr(getattr(writer, "_tw", None), "fullwidth", 120)
        colors = {"PASSED": {"green": True}, "FAILED": {"red": True}, "ERROR": {"red": True}}
        for line in lines(records, width, self.config.rootpath):
            writer.write(line.before)
            writer.write(line.verdict, **colors.get(line.verdict.strip(), {"bold": True}))
            writer.line(line.after.rstrip())
        writer.write_line(totals_line(records))
        for line in spec_lines(records, self.config.rootpath):
            writer.write_line(line)
        if self.partial is not None:
            writer.write_line(f"robustcheck: {partial_line(self.partial)}", yellow=True)
        if self.baseline_written is not None:
            writer.write_line(f"robustcheck baseline: {self.baseline_written}")
        if self.baseline_problem is not None:
            writer.write_line(f"robustcheck baseline: {self.baseline_problem}", red=True)
        if self.report is not None:
            if self.report.html is not None:
                writer.write_line(f"robustcheck report: {self.report.html}")
            for problem in self.report.problems:
                writer.write_line(f"robustcheck report: {problem}", yellow=True)
