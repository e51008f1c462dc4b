"""Progress bars per attack and evaluation: what they count, and when they stay quiet."""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from robustcheck.report import progress
from robustcheck.report.progress import ProgressBar, bars_enabled, spec_label
from tests.conftest import base_spec, write_spec

pytest_plugins = ["pytester"]


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def shown(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Bars forced on (as with --progress), shown at once, outside any xdist worker."""
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.setattr(progress, "BAR_DELAY", 0.0)
    progress.configure(True)
    yield
    progress.configure(None)


class Recording(ProgressBar):
    """A bar on a fake terminal that also keeps its label, total and the events advanced."""

    made: list[Recording] = []

    def __init__(self, label: str, total: int | None, stream: object = None) -> None:
        super().__init__(label, total, FakeTerminal())
        self.label, self.total, self.done = label, total, 0
        inner = self.advance
        assert inner is not None  # the bar is on

        def advance(n: int) -> None:
            self.done += n
            inner(n)

        self.advance = advance
        Recording.made.append(self)


@pytest.mark.parametrize("chunk_size", [None, 700])
def test_bars_count_every_attacked_and_evaluated_event(
    model_copy: Path, monkeypatch: pytest.MonkeyPatch, shown: None, chunk_size: int | None
) -> None:
    from robustcheck import core

    doc = base_spec(epsilon=0.5, batch_size=512)
    doc["attacks"]["pgd"]["steps"] = 2
    if chunk_size is not None:
        doc["data"]["nominal"]["chunk_size"] = chunk_size
    run = core.SpecRun.from_path(write_spec(model_copy, doc), device="cpu")
    Recording.made = []
    monkeypatch.setattr(core, "ProgressBar", Recording)
    correct = run.adversaries("pgd").correct
    full = run.adversaries("pgd", full=True)
    evaluation, attack, attack_all = Recording.made
    name = model_copy.name  # the spec is robustness.toml: named after its folder
    assert evaluation.label == f"{name}: evaluating nominal"
    assert evaluation.done == 3000
    assert evaluation.total == (3000 if chunk_size is None else None)  # a stream: unknown
    assert attack.label == f"{name}: pgd 0.5 sigma"
    assert attack.total == attack.done == int(correct.sum())
    assert 0 < attack.done < 3000
    assert attack_all.total == attack_all.done == len(full.correct) == 3000
    assert progress._open_bars == 0  # every bar was closed


def test_a_bar_shows_events_on_a_terminal_and_nothing_on_a_captured_stream(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("PYTEST_XDIST_WORKER", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)  # as outside pytest
    monkeypatch.setattr(progress, "BAR_DELAY", 0.0)
    monkeypatch.setattr(progress, "TERMINAL_INTERVAL", 0.0)  # draw every update
    terminal = FakeTerminal()
    with ProgressBar("qg_pfn: pgd 1 sigma", 2000, terminal) as bar:
        assert bar.advance is not None
        for _ in range(4):
            bar.advance(500)
    text = terminal.getvalue()
    assert "qg_pfn: pgd 1 sigma" in text and "2.00k/2.00k" in text
    captured = io.StringIO()  # no terminal: pytest's capture, a pipe, a file
    with ProgressBar("qg_pfn: pgd 1 sigma", 2000, captured) as bar:
        assert bar.advance is None
    assert captured.getvalue() == ""
    assert progress._open_bars == 0


def test_progress_into_a_log_writes_lines_at_the_start_and_end(
    monkeypatch: pytest.MonkeyPatch, shown: None
) -> None:
    monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)  # robustcheck run --progress
    log = io.StringIO()
    with ProgressBar("tagger: pgd 1 sigma", 3000, log) as bar:
        assert bar.advance is not None
        for _ in range(3):
            bar.advance(1000)  # within LOG_INTERVAL of the start: no line of its own
    lines = log.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in log.getvalue()
    assert lines[0].startswith("tagger: pgd 1 sigma:   0%")
    assert lines[1].startswith("tagger: pgd 1 sigma: 100%") and "3.00k/3.00k" in lines[1]


def test_when_bars_show(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = FakeTerminal()
    for name in ("PYTEST_XDIST_WORKER", "CI", "PYTEST_CURRENT_TEST"):
        monkeypatch.delenv(name, raising=False)
    try:
        assert bars_enabled(terminal) and not bars_enabled(io.StringIO())
        monkeypatch.setenv("CI", "true")
        assert not bars_enabled(terminal)
        progress.configure(True)  # --progress: also in CI, and into a file
        assert bars_enabled(terminal) and bars_enabled(io.StringIO())
        monkeypatch.setenv("PYTEST_CURRENT_TEST", "t.py::t (call)")  # inside pytest
        assert bars_enabled(terminal) and not bars_enabled(io.StringIO())  # only with -s
        monkeypatch.setenv("PYTEST_XDIST_WORKER", "gw0")
        assert not bars_enabled(terminal)
        monkeypatch.delenv("PYTEST_XDIST_WORKER")
        progress.configure(False)  # --no-progress, --quiet
        assert not bars_enabled(terminal) and not progress.enabled(terminal)
        progress.configure(None)
        monkeypatch.delenv("CI")
        assert not bars_enabled(terminal)  # inside pytest, unless asked
    finally:
        progress.configure(None)


def test_a_bar_clears_the_spinner_line_and_closes_when_its_loop_is_left(
    monkeypatch: pytest.MonkeyPatch, shown: None
) -> None:
    monkeypatch.setattr(progress, "INTERVAL", 0.01)
    monkeypatch.delenv("CI", raising=False)
    terminal = FakeTerminal()
    with progress.progress("check", terminal):
        assert progress._spinner is not None
        progress._spinner.draw(0)
        bar = ProgressBar("attack", 10, terminal)
        assert progress._spinner.width == 0  # its line was wiped for the bar
        time.sleep(0.1)  # ten spinner intervals: it stays silent while the bar shows
        text = terminal.getvalue()
        after_wipe = text[text.rindex(" \r") + 2 :]
        assert after_wipe.startswith("\rattack:") and "check" not in after_wipe
        with pytest.raises(RuntimeError):
            for _ in bar.over(range(3)):
                raise RuntimeError("a failed batch")
        assert progress._open_bars == 0 and bar.advance is None


def test_spec_label() -> None:
    assert spec_label(Path("examples/qg_jets/robustness.toml")) == "qg_jets"
    assert spec_label(Path("specs/qg_pfn.robust.yaml")) == "qg_pfn"


def test_cli_progress_flags_parse() -> None:
    from robustcheck.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["run", "s.toml"]).progress is None
    assert parser.parse_args(["run", "s.toml", "--progress"]).progress is True
    assert parser.parse_args(["run", "s.toml", "--no-progress"]).progress is False
    assert parser.parse_args(["run", "-q", "s.toml"]).quiet is True


def test_cli_quiet_prints_the_table_but_no_progress_or_check_lines(
    model_copy: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from robustcheck.cli import main

    seen: list[bool | None] = []
    monkeypatch.setattr(progress, "configure", seen.append)
    doc = base_spec(epsilon=0.5)
    doc["attacks"]["pgd"]["steps"] = 2
    spec = write_spec(model_copy, doc)
    assert main(["run", "--progress", str(spec)]) == 0
    loud = capsys.readouterr().out
    assert main(["run", "-q", "--progress", str(spec)]) == 0
    quiet = capsys.readouterr().out
    assert seen == [True, None, False, None]  # --quiet wins over --progress; reset at the end
    check_line = f"PASSED {spec}::fooling rate"  # the table has two spaces after PASSED
    assert check_line in loud and check_line not in quiet
    assert f"PASSED  {spec}::fooling rate" in quiet


def test_the_pytest_flag_turns_the_bars_on_for_its_session(pytester: pytest.Pytester) -> None:
    """(The ini key robustcheck_progress is read through the same get_option: test_ini.py.)"""
    assert progress._choice is None  # not asked: the default, quiet inside pytest
    config = pytester.parseconfigure("--robustcheck-progress")
    try:
        assert progress._choice is True
    finally:
        config._ensure_unconfigure()
    assert progress._choice is None
