"""Copy the tables of ``train.py``'s ``results.md`` into the READMEs that quote them, or check
that the quoted tables are still the ones the code prints.

A README quotes a table between markers that name the table and the run it comes from::

    <!-- robustcheck:table summary from test-scale -->
    | tagger | AUC nominal | ... |
    <!-- /robustcheck:table summary from test-scale -->

and ``results.md`` holds the same table between ``<!-- robustcheck:table summary -->``
markers. The runs are named in ``RUNS`` (the settings of each, in one place):

    python quote.py                      # rerun every run of RUNS, rewrite the READMEs' blocks
    python quote.py --check              # the same runs; exit 1 naming each stale block
    python quote.py --run test-scale     # only that run (20 s of CPU; small-sample 55 s)
    python quote.py --results out/results.md --run full-statistics   # quote a finished run

``tests/test_qg_example.py`` checks the ``test-scale`` blocks on every test run.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

HERE = Path(__file__).resolve().parent
READMES = (HERE / "README.md", HERE.parents[1] / "README.md")
MARKER = "robustcheck:table"

# The runs the READMEs quote, on the committed 500 + 500 jets of data/ (``train.run`` options).
RUNS: dict[str, dict[str, Any]] = {
    # what tests/test_qg_example.py trains (few epochs), with the specs of the three taggers
    # it runs: it checks these blocks on every test run
    "test-scale": {
        "dnn_epochs": 4,
        "pfn_epochs": 16,  # fewer leave the PFN deciding one class for every jet (sanity gate)
        "transformer_epochs": 2,  # exports and attacks only: their specs' gates are not run
        "edgeconv_epochs": 2,
        "loss_events": 100,
        "check": ("dnn", "dnn_adv", "pfn"),
    },
    # train.py's default epochs, all five specs: about a minute of CPU, so not in the tests
    "small-sample": {"check": True},
}
CHECKED_BY_TESTS = ("test-scale",)
# Runs on a sample that is not committed (PYTHIA, generate.py): quoted with --results only.
EXTERNAL_RUNS = ("full-statistics",)


@dataclass
class Block:
    """One marked table: its name, the run it is quoted from (None in results.md), its lines
    and where they sit in the file (``first`` and ``last`` index the marker lines)."""

    name: str
    run: str | None
    lines: list[str]
    first: int
    last: int


def parse_marker(line: str, end: bool) -> tuple[str, str | None] | None:
    """(table, run) of a start (or end) marker line, None for any other line."""
    text = line.strip()
    head = f"<!-- {'/' if end else ''}{MARKER} "
    if not (text.startswith(head) and text.endswith(" -->")):
        return None
    words = text[len(head) : -len(" -->")].split()
    if len(words) == 1:
        return words[0], None
    if len(words) == 3 and words[1] == "from":
        return words[0], words[2]
    raise ValueError(
        f"malformed marker {text!r}: write '{head}NAME -->' or '{head}NAME from RUN -->'"
    )


def blocks(text: str, source: Path | str) -> list[Block]:
    """Every marked table of ``text``; a marker left open or closed by another name is an
    error naming ``source`` and the line."""
    found: list[Block] = []
    lines = text.splitlines()
    open_at: int | None = None
    current: tuple[str, str | None] | None = None
    for number, line in enumerate(lines):
        try:
            start, end = parse_marker(line, end=False), parse_marker(line, end=True)
        except ValueError as exc:
            raise ValueError(f"{source}:{number + 1}: {exc}") from None
        if start is not None:
            if current is not None:
                raise ValueError(
                    f"{source}:{number + 1}: a table starts inside the table opened at line "
                    f"{open_at + 1 if open_at is not None else '?'}; close that one first"
                )
            open_at, current = number, start
        elif end is not None:
            if current != end or open_at is None:
                raise ValueError(
                    f"{source}:{number + 1}: end marker {line.strip()!r} does not close "
                    + (f"the table opened at line {open_at + 1}" if open_at is not None else "any")
                )
            found.append(Block(end[0], end[1], lines[open_at + 1 : number], open_at, number))
            open_at, current = None, None
    if open_at is not None:
        raise ValueError(f"{source}:{open_at + 1}: table marker never closed")
    return found


def tables_of(results: Path) -> dict[str, list[str]]:
    """The tables of a ``results.md`` written by ``train.py``, by name."""
    return {b.name: b.lines for b in blocks(results.read_text(), results) if b.run is None}


def stale_blocks(readme: Path, run: str, tables: dict[str, list[str]]) -> list[str]:
    """One message per block of ``readme`` quoted from ``run`` that differs from ``tables``,
    naming the README, the table and the first differing row."""
    messages = []
    for block in blocks(readme.read_text(), readme):
        if block.run != run:
            continue
        where = f"{readme}: table {block.name!r} from {run}"
        if block.name not in tables:
            messages.append(f"{where}: train.py's results.md has no such table")
            continue
        expected = tables[block.name]
        for row, (quoted, printed) in enumerate(zip(block.lines, expected, strict=False)):
            if quoted != printed:
                line = block.first + 2 + row
                messages.append(
                    f"{where}, row {row + 1} (line {line}):\n"
                    f"  README: {quoted}\n  code:   {printed}"
                )
                break
        else:
            if len(block.lines) != len(expected):
                row = min(len(block.lines), len(expected))
                longer = "README" if len(block.lines) > len(expected) else "code"
                rest = (block.lines if longer == "README" else expected)[row]
                messages.append(f"{where}, row {row + 1}: only the {longer} has it:\n  {rest}")
    return messages


def quote(text: str, source: Path | str, run: str, tables: dict[str, list[str]]) -> str:
    """``text`` with every block quoted from ``run`` replaced by the table of that name."""
    lines = text.splitlines()
    for block in reversed(blocks(text, source)):
        if block.run != run:
            continue
        if block.name not in tables:
            raise ValueError(f"{source}:{block.first + 1}: results.md has no table {block.name!r}")
        lines[block.first + 1 : block.last] = tables[block.name]
    return "\n".join(lines) + ("\n" if text.endswith("\n") else "")


def train_module() -> ModuleType:
    """``train.py`` beside this file (registered under the name the tests use)."""
    name = "qg_example_train"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, HERE / "train.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules[name]


def run_quoted(run: str, out: Path, verbose: bool = False) -> Path:
    """Train and check as the READMEs' ``run`` did, on ``data/``; the ``results.md`` written."""
    train_module().run(HERE / "data", out, verbose=verbose, **RUNS[run])
    return out / "results.md"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--run",
        action="append",
        choices=[*RUNS, *EXTERNAL_RUNS],
        help="the run to quote (repeatable; default: every run of RUNS)",
    )
    parser.add_argument(
        "--results", type=Path, help="quote this results.md (one --run) instead of rerunning"
    )
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 if stale")
    parser.add_argument("--out", type=Path, help="folder for the runs (default: a temporary one)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    args = parser.parse_args(argv)
    runs = args.run or list(RUNS)
    if args.results is not None and len(runs) != 1:
        parser.error("--results quotes one run: name it with --run")
    if args.results is None and set(runs) & set(EXTERNAL_RUNS):
        parser.error(f"{', '.join(EXTERNAL_RUNS)}: give its results.md with --results")
    import torch

    torch.set_num_threads(args.threads)
    stale: list[str] = []
    with tempfile.TemporaryDirectory(prefix="qg_quote_") as scratch:
        for run in runs:
            if args.results is not None:
                results = args.results
            else:
                print(f"{run}: train.py with {RUNS[run]} on data/ ...", flush=True)
                results = run_quoted(run, (args.out or Path(scratch)) / run)
            tables = tables_of(results)
            for readme in READMES:
                if args.check:
                    stale += stale_blocks(readme, run, tables)
                    continue
                text = readme.read_text()
                new = quote(text, readme, run, tables)
                quoted = sum(b.run == run for b in blocks(text, readme))
                if new != text:
                    readme.write_text(new)
                state = "updated" if new != text else "unchanged"
                print(f"{readme}: {quoted} table(s) from {run}, {state}")
    for message in stale:
        print(message)
    if args.check:
        print(f"{len(stale)} stale table(s)" if stale else "every quoted table is current")
    return 1 if stale else 0


if __name__ == "__main__":
    sys.exit(main())
