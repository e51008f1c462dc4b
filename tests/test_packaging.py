"""The release artefacts: ``python -m build`` makes a wheel and an sdist that ``twine check``
accepts, and the wheel alone, installed into a folder of its own, runs the quickstart both
from the command line and as a pytest plugin."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def run(*args: str | Path, **kwargs: object) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args], capture_output=True, text=True, timeout=300, **kwargs
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Wheel and sdist built from a copy of the sources (the checkout is left untouched)."""
    source = tmp_path_factory.mktemp("source")
    for name in ("pyproject.toml", "README.md", "LICENSE", "CHANGELOG.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(
        ROOT / "robustcheck", source / "robustcheck", ignore=shutil.ignore_patterns("__pycache__")
    )
    out = tmp_path_factory.mktemp("dist")
    built = run(sys.executable, "-m", "build", "--no-isolation", "-o", out, source)
    assert built.returncode == 0, built.stdout + built.stderr
    return out


def test_wheel_and_sdist_pass_twine_check(dist: Path) -> None:
    files = sorted(dist.iterdir(), key=lambda f: f.suffix)
    assert [f.suffix for f in files] == [".gz", ".whl"], files
    checked = run(sys.executable, "-m", "twine", "check", "--strict", *files)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert checked.stdout.count("PASSED") == 2, checked.stdout
    wheel = zipfile.ZipFile(files[1])
    names = wheel.namelist()
    assert "robustcheck/py.typed" in names
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
    text = wheel.read(metadata).decode()
    assert "License-Expression: MIT" in text
    entry_points = wheel.read(metadata.replace("METADATA", "entry_points.txt")).decode()
    assert "robustcheck = robustcheck.plugin" in entry_points


def test_the_installed_wheel_runs_the_quickstart(dist: Path, tmp_path: Path) -> None:
    """pip installs the wheel (no dependencies: they are this interpreter's) into a folder put
    first on the path, so every robustcheck module comes from the wheel, not the checkout."""
    wheel = next(dist.glob("*.whl"))
    target = tmp_path / "site"
    installed = run(
        sys.executable,
        "-m",
        "pip",
        "install",
        "--no-deps",
        "--no-index",
        "--target",
        target,
        wheel,
    )
    assert installed.returncode == 0, installed.stdout + installed.stderr
    shutil.copytree(ROOT / "examples" / "quickstart", tmp_path / "quickstart")
    env = {**os.environ, "PYTHONPATH": str(target)}
    where = run(
        sys.executable,
        "-c",
        "import robustcheck; print(robustcheck.__file__)",
        env=env,
        cwd=tmp_path,
    )
    assert Path(where.stdout.strip()).is_relative_to(target), where.stdout + where.stderr

    cli = run(
        target / "bin" / "robustcheck",
        "run",
        "quickstart/tagger.robust.toml",
        env=env,
        cwd=tmp_path,
    )
    assert cli.returncode == 1, cli.stdout + cli.stderr  # the 3-sigma check fails on purpose
    assert "PASSED" in cli.stdout and "FAILED" in cli.stdout, cli.stdout

    plugin = run(
        sys.executable,
        "-m",
        "pytest",
        "-p",
        "no:cacheprovider",
        "--robustcheck",
        "quickstart/tagger.robust.toml",
        env=env,
        cwd=tmp_path,
    )
    assert plugin.returncode == 1, plugin.stdout + plugin.stderr
    assert "1 failed, 2 passed" in plugin.stdout, plugin.stdout
    assert "robustcheck summary" in plugin.stdout
