"""What the robustcheck plugin costs a test suite that never uses it.

Times ``pytest --collect-only`` on a tree of plain test files (no specs), with the plugin
loaded (the default once it is installed) and with ``-p no:robustcheck``, interleaved, and
prints the medians and their difference. Run from the repository root after the install:

    python3 benchmarks/plugin_overhead.py --files 200 --repeats 15
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def make_tree(folder: Path, files: int) -> None:
    for i in range(files):
        (folder / f"test_{i:04d}.py").write_text(
            "".join(f"def test_{j}():\n    assert {j} == {j}\n\n" for j in range(5))
        )


def collect(folder: Path, plugin: bool) -> float:
    command = [sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider"]
    if not plugin:
        command += ["-p", "no:robustcheck"]
    started = time.perf_counter()
    subprocess.run(command, cwd=folder, check=True, capture_output=True)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=200, help="test files in the tree")
    parser.add_argument("--repeats", type=int, default=15, help="runs of each variant")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        make_tree(folder, args.files)
        collect(folder, True)  # warm the file cache
        times: dict[bool, list[float]] = {True: [], False: []}
        for _ in range(args.repeats):
            for plugin in (True, False):
                times[plugin].append(collect(folder, plugin))
    with_plugin, without = statistics.median(times[True]), statistics.median(times[False])
    spread = statistics.stdev(times[False]) if len(times[False]) > 1 else 0.0
    print(f"pytest --collect-only on {args.files} files x 5 tests, {args.repeats} runs each")
    print(f"  with robustcheck    median {with_plugin * 1e3:7.1f} ms")
    print(
        f"  -p no:robustcheck   median {without * 1e3:7.1f} ms (run-to-run sd {spread * 1e3:.1f})"
    )
    print(f"  difference          {(with_plugin - without) * 1e3:+7.1f} ms")


if __name__ == "__main__":
    main()
