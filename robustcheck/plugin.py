"""pytest plugin: collects robustness specs as test items; ``--robustcheck`` runs them.

Only pytest hooks live here. torch, onnxruntime and scipy are imported when a spec item
runs, never when pytest loads this plugin.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from robustcheck.core import SpecRun
    from robustcheck.result import CheckResult
    from robustcheck.spec import CheckSpec

SPEC_FILE = re.compile(r"^(robustness|.+\.robust)\.(toml|ya?ml)$")
SKIP_REASON = "robustness checks run only with --robustcheck (or ini option robustcheck = true)"


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("robustcheck", "robustness checks of ML taggers")
    group.addoption(
        "--robustcheck",
        action="store_true",
        default=False,
        help="run the checks of robustness.toml/yaml and *.robust.toml/yaml specs",
    )
    group.addoption(
        "--robustcheck-device",
        default=None,
        metavar="DEVICE",
        help="device for every spec, overriding [model] device (cpu, cuda, cuda:N)",
    )
    group.addoption(
        "--robustcheck-seed",
        type=int,
        default=None,
        metavar="SEED",
        help="seed for every attack, overriding the specs' seeds",
    )
    parser.addini(
        "robustcheck",
        type="bool",
        default=False,
        help="run robustness spec checks as with --robustcheck",
    )


def enabled(config: pytest.Config) -> bool:
    return bool(config.getoption("robustcheck") or config.getini("robustcheck"))


def pytest_collect_file(file_path: Path, parent: pytest.Collector) -> pytest.Collector | None:
    if SPEC_FILE.match(file_path.name):
        return SpecFile.from_parent(parent, path=file_path)
    return None


class CheckFailed(Exception):
    """A check ran and its assertion does not hold."""

    def __init__(self, result: CheckResult) -> None:
        super().__init__(result.summary)
        self.result = result


class SpecFile(pytest.File):
    """One spec file; one item per [[checks]] entry."""

    _run: SpecRun | None = None

    def collect(self) -> Iterator[pytest.Item]:
        from robustcheck.spec import load_spec

        spec = load_spec(self.path)
        for check in spec.checks:
            yield SpecItem.from_parent(self, name=check.name, check=check)

    def spec_run(self) -> SpecRun:
        """The shared run of this spec: model, data and attacks are computed once."""
        if self._run is None:
            from robustcheck.core import SpecRun

            self._run = SpecRun.from_path(
                self.path,
                device=self.config.getoption("robustcheck_device"),
                seed=self.config.getoption("robustcheck_seed"),
            )
        return self._run

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException]) -> Any:
        from robustcheck.errors import RobustcheckError

        if isinstance(excinfo.value, RobustcheckError):
            return f"{excinfo.value.kind}: {excinfo.value}"
        return super().repr_failure(excinfo)


class SpecItem(pytest.Item):
    """One check of a spec."""

    def __init__(self, *, check: CheckSpec, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.check = check

    def setup(self) -> None:
        if not enabled(self.config):
            pytest.skip(SKIP_REASON)

    def runtest(self) -> None:
        assert isinstance(self.parent, SpecFile)
        result = self.parent.spec_run().run_check(self.check)
        self.user_properties.extend(result.properties())
        if not result.passed:
            raise CheckFailed(result)

    def repr_failure(self, excinfo: pytest.ExceptionInfo[BaseException], style: Any = None) -> Any:
        from robustcheck.errors import RobustcheckError

        if isinstance(excinfo.value, CheckFailed):
            return excinfo.value.result.message()
        if isinstance(excinfo.value, RobustcheckError):
            return f"{excinfo.value.kind}: {excinfo.value}"
        return super().repr_failure(excinfo, style=style)

    def reportinfo(self) -> tuple[Path, int | None, str]:
        return self.path, None, self.name
