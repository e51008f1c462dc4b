"""Baselines are never lost or half-written: atomic writes, per-entry merges under a lock,
nothing written by an interrupted run, and one clear error for a file that is no baseline."""

from __future__ import annotations

import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from robustcheck import atomic
from robustcheck.baseline import Baseline, lock_path
from robustcheck.cli import main
from robustcheck.errors import SpecError
from robustcheck.report.writer import LOCK_NAME
from tests.conftest import base_spec, write_spec

EVENTS = 300
BOMB = """
import torch


class Bomb(torch.nn.Module):
    def forward(self, x):
        raise KeyboardInterrupt  # as if Ctrl-C arrived while the model runs


def build():
    return Bomb()
"""


def spec_doc(*checks: tuple[str, float], model: str = "tagger.pt") -> dict[str, Any]:
    doc = base_spec(model=model)
    doc["data"]["nominal"]["max_events"] = EVENTS
    doc["checks"] = [
        {"name": name, "type": "fooling_rate", "attack": "pgd", "max": limit}
        for name, limit in checks
    ]
    return doc


def make_project(folder: Path, model_dir: Path, bomb: bool = False) -> tuple[Path, Path]:
    """a.robust.toml (alpha_rate passes, alpha_strict fails) and b.robust.toml (beta_rate,
    on a model that raises KeyboardInterrupt when ``bomb``)."""
    for name in ("tagger.pt", "data.npz"):
        shutil.copy(model_dir / name, folder / name)
    (folder / "bomb.py").write_text(BOMB)
    a = write_spec(folder, spec_doc(("alpha_rate", 1.0), ("alpha_strict", 0.0)), "a.robust.toml")
    b_doc = spec_doc(("beta_rate", 1.0), model="bomb:build" if bomb else "tagger.pt")
    b_doc["model"].pop("weights", None)
    b = write_spec(folder, b_doc, "b.robust.toml")
    return a, b


def fake_entry(rate: float) -> dict[str, Any]:
    return {
        "type": "fooling_rate",
        "figures": {"fooling_rate": rate, "n_fooled": 1, "n_events": round(1 / rate)},
        "passed": True,
        "model": "0" * 64,
        "fingerprints": {"data.nominal": "f" * 64},
    }


def released(path: Path) -> dict[str, Any]:
    """A baseline with an entry for every check of both specs and one of a third spec."""
    doc = {
        "format": 1,
        "robustcheck": "0.0.1",
        "specs": {
            "a.robust.toml": {"alpha_rate": fake_entry(0.5), "alpha_strict": fake_entry(0.25)},
            "b.robust.toml": {"beta_rate": fake_entry(0.125)},
            "elsewhere/c.robust.toml": {"gamma": fake_entry(0.0625)},
        },
    }
    path.write_text(json.dumps(doc, indent=2))
    return doc


# ---------------------------------------------------------------- atomic writes


def test_atomic_write_keeps_the_old_file_when_the_write_fails(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    target = tmp_path / "baseline.json"
    target.write_text('{"old": true}')
    target.chmod(0o640)
    atomic.write_json(target, {"new": True})
    assert json.loads(target.read_text()) == {"new": True}
    assert target.stat().st_mode & 0o777 == 0o640  # the replaced file's permissions
    (tmp_path / "fresh.json").unlink(missing_ok=True)

    def interrupted(src: str, dst: str) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_json(target, {"newer": True})
    assert json.loads(target.read_text()) == {"new": True}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["baseline.json"]  # no temporary


def test_lock_waits_for_another_holder_and_says_so(tmp_path: Path) -> None:
    from filelock import FileLock

    lock = tmp_path / "x.lock"
    notices: list[str] = []
    holder = FileLock(str(lock), thread_local=False)  # released by the timer's thread
    holder.acquire()
    threading.Timer(1.5, holder.release).start()
    started = time.perf_counter()
    with atomic.locked(lock, "the thing", notices.append, timeout=60):
        waited = time.perf_counter() - started
    assert waited >= 1.4
    assert notices == [
        f"robustcheck: waiting for another run to finish writing the thing (lock {lock})"
    ]
    holder.acquire()
    try:
        with (
            pytest.raises(atomic.LockTimeout, match="held the lock .*x.lock"),
            atomic.locked(lock, "the thing", timeout=0.2),
        ):
            pass
    finally:
        holder.release()


# ---------------------------------------------------------------- merges


def test_save_merges_entries_and_keeps_the_others(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    before = released(path)
    baseline = Baseline(
        path,
        {
            "a.robust.toml": {"alpha_rate": fake_entry(0.75)},
            "d.robust.toml": {"delta": fake_entry(0.5)},
        },
    )
    outcome = baseline.save()
    assert (outcome.written, outcome.kept) == (2, 3)
    assert outcome.line() == f"{path} (2 entries written, 3 entries kept from before)"
    after = json.loads(path.read_text())["specs"]
    assert after["a.robust.toml"]["alpha_rate"] == fake_entry(0.75)
    assert after["d.robust.toml"] == {"delta": fake_entry(0.5)}
    for spec, checks in before["specs"].items():
        for name, entry in checks.items():
            if (spec, name) != ("a.robust.toml", "alpha_rate"):
                assert after[spec][name] == entry
    assert lock_path(path).name == "baseline.json.lock"


def test_save_never_overwrites_a_file_that_is_no_baseline(tmp_path: Path) -> None:
    path = tmp_path / "baseline.json"
    path.write_bytes(b"\x89PNG not a baseline")
    with pytest.raises(SpecError, match="not a robustcheck baseline: not UTF-8") as error:
        Baseline(path, {"a.robust.toml": {"alpha_rate": fake_entry(0.5)}}).save()
    assert str(path) in str(error.value) and "it is left as it is" in str(error.value)
    assert path.read_bytes() == b"\x89PNG not a baseline"


BROKEN = {
    "garbage bytes": (b"\x00\xff\xfe garbage", "not UTF-8 text"),
    "not JSON": (b"{format: 1", "not JSON"),
    "a list": (b"[1, 2]", "a JSON list, not an object"),
    "another format": (b'{"format": 2, "specs": {}}', "format 2, expected 1"),
    "specs not a table": (b'{"format": 1, "specs": 5}', "specs: not a robustcheck baseline"),
    "check not a table": (
        b'{"format": 1, "specs": {"a.robust.toml": {"rate": 3}}}',
        "specs.a.robust.toml.rate: not a robustcheck baseline: a int",
    ),
    "entry missing keys": (
        b'{"format": 1, "specs": {"a.robust.toml": {"rate": {"type": "fooling_rate"}}}}',
        "no 'figures'",
    ),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_a_broken_baseline_is_one_error_naming_the_file(
    case: str, tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    content, message = BROKEN[case]
    path = tmp_path / "released.json"
    path.write_bytes(content)
    with pytest.raises(SpecError, match="not a robustcheck baseline") as error:
        Baseline.load(path)
    assert message in str(error.value) and str(path) in str(error.value)
    assert "fix: write it again with --robustcheck-save-baseline" in str(error.value)
    spec = write_spec(tmp_path, spec_doc(("alpha_rate", 1.0)))
    shutil.copy(model_dir / "tagger.pt", tmp_path)
    shutil.copy(model_dir / "data.npz", tmp_path)
    assert main(["run", str(spec), "--baseline", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.count("not a robustcheck baseline") == 1 and message in err
    assert "internal error" not in err and str(path) in err


def test_a_broken_baseline_in_pytest(pytester: pytest.Pytester, model_dir: Path) -> None:
    a, _ = make_project(pytester.path, model_dir)
    (pytester.path / "released.json").write_text('{"format": 1, "specs": 5}')
    result = pytester.runpytest("--robustcheck", "--robustcheck-baseline", "released.json")
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.stderr.fnmatch_lines(
        ["ERROR: spec error: *released.json: specs: not a robustcheck baseline: a int*"]
    )
    # the same file named by the spec: each check that compares fails, naming it
    doc = spec_doc(("alpha_rate", 1.0))
    doc["checks"][0]["no_regression"] = True
    doc["baseline"] = "released.json"
    write_spec(pytester.path, doc, "a.robust.toml")
    (pytester.path / "b.robust.toml").unlink()
    result = pytester.runpytest("--robustcheck")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(["*spec error: *released.json: specs: not a robustcheck*"])
    assert "Traceback" not in result.stdout.str()


# ---------------------------------------------------------------- pytest runs


def test_a_k_selection_updates_its_entry_and_keeps_the_others(
    pytester: pytest.Pytester, model_dir: Path
) -> None:
    make_project(pytester.path, model_dir)
    before = released(pytester.path / "baseline.json")
    result = pytester.runpytest_subprocess(  # it draws plots: see test_report.py
        "--robustcheck",
        "-k",
        "alpha_rate",
        "--robustcheck-save-baseline",
        "baseline.json",
        "--robustcheck-report",
        "rep",
    )
    result.assert_outcomes(passed=1, deselected=2)
    result.stdout.fnmatch_lines(
        [
            "robustcheck: 1 of 3 checks ran (2 deselected (-k, -m or --deselect))",
            "robustcheck baseline: *baseline.json (1 entry written, 3 entries kept from before)",
        ]
    )
    after = json.loads((pytester.path / "baseline.json").read_text())["specs"]
    for spec, checks in before["specs"].items():
        assert set(after[spec]) == set(checks)
        for name, entry in checks.items():
            if name != "alpha_rate":
                assert after[spec][name] == entry
    report = json.loads((pytester.path / "rep" / "report.json").read_text())
    rate = report["specs"][0]["checks"][0]["figures"]
    updated = after["a.robust.toml"]["alpha_rate"]
    assert updated["figures"]["n_fooled"] == rate["n_fooled"]
    assert updated["figures"]["n_events"] == rate["n_events"]
    assert set(updated["fingerprints"]) >= {"data.nominal", "envelope", "attack", "check"}
    partial = report["partial"]
    assert (partial["ran"], partial["collected"], partial["interrupted"]) == (1, 3, False)
    assert sorted(Path(c).name for c in partial["not_run"]) == [
        "a.robust.toml::alpha_strict",
        "b.robust.toml::beta_rate",
    ]
    assert report["problems"][0].startswith("partial run: 1 of 3 checks ran")


def test_an_interrupted_run_leaves_the_baseline_byte_identical(
    pytester: pytest.Pytester, model_dir: Path
) -> None:
    make_project(pytester.path, model_dir, bomb=True)
    released(pytester.path / "baseline.json")
    before = (pytester.path / "baseline.json").read_bytes()
    result = pytester.runpytest_subprocess(
        "--robustcheck",
        "--robustcheck-save-baseline",
        "baseline.json",
        "--robustcheck-report",
        "rep",
        "-p",
        "no:cacheprovider",
    )
    # a real interruption: pytest stops the session and says so
    assert result.ret == pytest.ExitCode.INTERRUPTED
    result.stdout.fnmatch_lines(["*! KeyboardInterrupt !*"])
    assert "b.robust.toml::beta_rate PASSED" not in result.stdout.str()
    result.stdout.fnmatch_lines(
        [
            "robustcheck: 2 of 3 checks ran (interrupted: KeyboardInterrupt*",
            "robustcheck baseline: not written: the run was interrupted (interrupted: "
            "KeyboardInterrupt*); *baseline.json is unchanged",
        ]
    )
    assert (pytester.path / "baseline.json").read_bytes() == before
    report = json.loads((pytester.path / "rep" / "report.json").read_text())
    assert report["partial"]["interrupted"] is True
    assert (report["partial"]["ran"], report["partial"]["collected"]) == (2, 3)
    assert [Path(c).name for c in report["partial"]["not_run"]] == ["b.robust.toml::beta_rate"]
    assert "interrupted run" in (pytester.path / "rep" / "report.html").read_text()


def test_a_run_stopped_by_x_writes_no_baseline(pytester: pytest.Pytester, model_dir: Path) -> None:
    """-x stops the session at alpha_strict's failure, before b.robust.toml runs: an
    interruption, so the baseline stays as it was (and a missing one is not created)."""
    make_project(pytester.path, model_dir)
    released(pytester.path / "baseline.json")
    before = (pytester.path / "baseline.json").read_bytes()
    result = pytester.runpytest(
        "--robustcheck", "-x", "--robustcheck-save-baseline", "baseline.json"
    )
    result.assert_outcomes(passed=1, failed=1)
    result.stdout.fnmatch_lines(
        [
            "robustcheck: 2 of 3 checks ran (interrupted: stopped early: stopping after 1*",
            "robustcheck baseline: not written: *baseline.json is unchanged",
        ]
    )
    assert (pytester.path / "baseline.json").read_bytes() == before
    result = pytester.runpytest("--robustcheck", "-x", "--robustcheck-save-baseline", "new.json")
    result.stdout.fnmatch_lines(["robustcheck baseline: not written: *new.json was not created"])
    assert not (pytester.path / "new.json").exists()


# ---------------------------------------------------------------- the command line


def test_cli_interrupted_run_keeps_the_baseline(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = make_project(tmp_path, model_dir, bomb=True)
    baseline = tmp_path / "baseline.json"
    released(baseline)
    before = baseline.read_bytes()
    code = main(
        [
            "run",
            str(a),
            str(b),
            "--save-baseline",
            str(baseline),
            "--report",
            str(tmp_path / "rep"),
            "--device",
            "cpu",
        ]
    )
    assert code == 130
    out = capsys.readouterr().out
    assert f"baseline not written: the run was interrupted; {baseline} is unchanged" in out
    assert "robustcheck: 2 of 3 checks ran (interrupted: KeyboardInterrupt)" in out
    assert baseline.read_bytes() == before
    partial = json.loads((tmp_path / "rep" / "report.json").read_text())["partial"]
    assert partial["interrupted"] and (partial["ran"], partial["collected"]) == (2, 3)


def test_cli_baseline_merge_and_a_spec_that_does_not_load(
    tmp_path: Path, model_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    a, b = make_project(tmp_path, model_dir)
    baseline = tmp_path / "baseline.json"
    before = released(baseline)
    broken = tmp_path / "broken.robust.toml"
    broken.write_text("version = 1\n[model]\n")
    code = main(
        [
            "run",
            str(a),
            str(broken),
            "--save-baseline",
            str(baseline),
            "--report",
            str(tmp_path / "rep"),
            "--device",
            "cpu",
        ]
    )
    assert code == 2  # the spec error
    out = capsys.readouterr().out
    assert f"baseline written to {baseline} (2 entries written, 2 entries kept from before)" in out
    after = json.loads(baseline.read_text())["specs"]
    assert after["b.robust.toml"] == before["specs"]["b.robust.toml"]
    assert after["elsewhere/c.robust.toml"] == before["specs"]["elsewhere/c.robust.toml"]
    assert after["a.robust.toml"]["alpha_rate"] != before["specs"]["a.robust.toml"]["alpha_rate"]
    partial = json.loads((tmp_path / "rep" / "report.json").read_text())["partial"]
    assert not partial["interrupted"] and partial["not_run"] == [
        "../broken.robust.toml (not loaded)"
    ]
    assert partial["reason"] == "1 spec could not be loaded"


def read_lines(process: subprocess.Popen[str], lines: queue.Queue[tuple[int, str]]) -> None:
    assert process.stdout is not None
    for line in process.stdout:
        lines.put((process.pid, line))


def test_two_processes_write_one_baseline_and_one_report(tmp_path: Path, model_dir: Path) -> None:
    """Both runs wait on the locks this test holds until each says it waits; then they race
    for them while a reader keeps parsing both files. Every read is whole JSON, and the
    baseline ends with the entries of both specs and the one it had."""
    from filelock import FileLock

    a_doc = spec_doc(("alpha_rate", 1.0))
    b_doc = spec_doc(("beta_rate", 1.0))
    for name in ("tagger.pt", "data.npz"):
        shutil.copy(model_dir / name, tmp_path / name)
    specs = [
        write_spec(tmp_path, a_doc, "a.robust.toml"),
        write_spec(tmp_path, b_doc, "b.robust.toml"),
    ]
    baseline, report = tmp_path / "baseline.json", tmp_path / "rep"
    report.mkdir()
    released(baseline)
    gamma = json.loads(baseline.read_text())["specs"]["elsewhere/c.robust.toml"]
    locks = [FileLock(str(lock_path(baseline))), FileLock(str(report / LOCK_NAME))]
    for lock in locks:
        lock.acquire()
    env = {**os.environ, "CI": "1", "PYTHONPATH": str(Path(__file__).parents[1])}
    command = [
        sys.executable,
        "-m",
        "robustcheck.cli",
        "run",
        "--device",
        "cpu",
        "--save-baseline",
        str(baseline),
        "--report",
        str(report),
    ]
    lines: queue.Queue[tuple[int, str]] = queue.Queue()
    processes = [
        subprocess.Popen(
            [*command, str(spec)],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=tmp_path,
        )
        for spec in specs
    ]
    reads = 0
    stop = threading.Event()

    def reader() -> None:
        nonlocal reads
        while not stop.is_set():
            for path in (baseline, report / "report.json"):
                if path.exists():
                    json.loads(path.read_text())  # raises on a half-written file
                    reads += 1

    watcher = threading.Thread(target=reader)
    try:
        for process in processes:
            threading.Thread(target=read_lines, args=(process, lines), daemon=True).start()
        waiting: set[int] = set()
        output: dict[int, list[str]] = {p.pid: [] for p in processes}
        deadline = time.monotonic() + 240
        while waiting != {p.pid for p in processes}:
            pid, line = lines.get(timeout=max(deadline - time.monotonic(), 0.1))
            output[pid].append(line)
            if "waiting for another run to finish writing the baseline" in line:
                waiting.add(pid)
        watcher.start()
    finally:
        for lock in locks:
            lock.release()
    for process in processes:
        process.wait(timeout=240)
    stop.set()
    watcher.join()
    assert [p.returncode for p in processes] == [0, 0], output
    assert reads > 0
    specs_after = json.loads(baseline.read_text())["specs"]
    assert set(specs_after) == {"a.robust.toml", "b.robust.toml", "elsewhere/c.robust.toml"}
    assert specs_after["elsewhere/c.robust.toml"] == gamma
    assert specs_after["a.robust.toml"]["alpha_rate"]["figures"]["n_events"] > 0
    assert specs_after["b.robust.toml"]["beta_rate"]["figures"]["n_events"] > 0
    document = json.loads((report / "report.json").read_text())
    (spec,) = document["specs"]  # one run's report, whole, and not partial
    assert document["partial"] is None and Path(spec["path"]).name in {
        "a.robust.toml",
        "b.robust.toml",
    }
    leftovers = [p.name for p in tmp_path.rglob("*.tmp")]
    assert leftovers == []
