"""Refresh (or check) the quickstart output the main README quotes, from a real run.

The README's "Five minutes" section shows an excerpt of ``pytest --robustcheck -v`` in this
folder between ``<!-- robustcheck:table pytest-output from quickstart -->`` markers. This script
runs pytest on a copy of the folder, cuts the same excerpt from its output (``excerpt``) and
rewrites the block, or with ``--check`` exits 1 naming the first differing row.
``tests/test_plugin.py`` checks the block against the run it makes of this folder.

    python examples/quickstart/quote.py            # rerun, rewrite the README's block
    python examples/quickstart/quote.py --check    # rerun, change nothing; exit 1 if stale
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from types import ModuleType

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
README = ROOT / "README.md"
RUN = "quickstart"
TABLE = "pytest-output"
WIDTH = 80  # pytest's separator lines, at the width of a terminal that is not one
FAILURE_SHOWN = "fooling rate within 3 sigma"
SPEC_SHOWN = "tagger.robust.toml"


def markers() -> ModuleType:
    """The README-block helpers of ``examples/qg_jets/quote.py`` (markers, stale rows)."""
    name = "qg_example_quote"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, ROOT / "examples/qg_jets/quote.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def separator(title: str, char: str) -> str:
    """A pytest section line (``=== title ===``) at ``WIDTH`` columns, as pytest draws it."""
    n = (WIDTH - len(title) - 2) // 2
    line = f"{char * n} {title} {char * n}"
    return line + char if len(line) + 1 <= WIDTH else line


def excerpt(output: str) -> list[str]:
    """The README's excerpt of a ``pytest --robustcheck -v`` run of this folder: the failure
    report of one check, the summary's entries of one spec, the totals and the nominal lines.
    Spec paths are written as from the repository root; separator lines at ``WIDTH``."""
    lines = [
        re.sub(r"(?<![\w/.-])[\w/.-]*?([\w.-]+\.robust\.toml)", r"examples/quickstart/\1", line)
        for line in output.splitlines()
    ]
    section = re.compile(r"^([_=])\1+ (.+?) \1+$")

    def find(pattern: str, what: str) -> int:
        for number, line in enumerate(lines):
            if re.search(pattern, line):
                return number
        raise ValueError(f"the pytest output has no {what} (pattern {pattern!r})")

    failure = find(rf"^_+ {re.escape(FAILURE_SHOWN)} _+$", f"failure report of {FAILURE_SHOWN!r}")
    summary = find(r"^=+ robustcheck summary =+$", "robustcheck summary")
    totals = find(r"^\d+ passed, \d+ failed, \d+ errors? in \d+ specs?$", "totals line")
    entries: list[str] = []
    for number in range(summary + 1, totals):
        line = lines[number]
        if re.match(
            rf"^(PASSED|FAILED|ERROR)\s+examples/quickstart/{re.escape(SPEC_SHOWN)}::", line
        ):
            entries.append(line)
            following = number + 1
            while following < len(lines) and lines[following].startswith("        "):
                entries.append(lines[following])
                following += 1
    if not entries:
        raise ValueError(f"the robustcheck summary lists no check of {SPEC_SHOWN}:\n{output}")
    nominal = [line for line in lines if line.startswith("robustcheck: ") and "nominal AUC" in line]
    shown = lines[failure : failure + 3] + [lines[summary]]
    shown = [
        separator(m.group(2), m.group(1)) if (m := section.match(line)) else line for line in shown
    ]
    return ["```", "...", *shown[:3], shown[3], "...", *entries, lines[totals], *nominal, "```"]


def run_pytest() -> str:
    """``pytest --robustcheck -v`` on a copy of this folder (the committed files stay as
    they are), one torch thread; its output."""
    with tempfile.TemporaryDirectory(prefix="quickstart_") as scratch:
        target = Path(scratch) / "quickstart"
        shutil.copytree(HERE, target, ignore=shutil.ignore_patterns("quote.py", "__pycache__"))
        path = os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))
        env = {**os.environ, "COLUMNS": str(WIDTH), "OMP_NUM_THREADS": "1", "PYTHONPATH": path}
        done = subprocess.run(
            [sys.executable, "-m", "pytest", "--robustcheck", "-v", "-p", "no:cacheprovider"],
            cwd=target,
            env=env,
            capture_output=True,
            text=True,
        )
    return done.stdout


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    args = parser.parse_args(argv)
    helpers = markers()
    tables = {TABLE: excerpt(run_pytest())}
    if args.check:
        stale = helpers.stale_blocks(README, RUN, tables)
        print("\n".join(stale) if stale else "the quoted quickstart output is current")
        return 1 if stale else 0
    text = README.read_text()
    new = helpers.quote(text, README, RUN, tables)
    README.write_text(new)
    print(f"{README}: {'updated' if new != text else 'unchanged'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
