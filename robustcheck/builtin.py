"""robustcheck's own attacks, checks, loaders and readers, registered through the hooks."""

from __future__ import annotations

from robustcheck.declaration import Declaration
from robustcheck.hookspecs import hookimpl


@hookimpl
def robustcheck_attacks() -> list[Declaration]:
    from robustcheck.attacks import ATTACKS

    return list(ATTACKS.values())


@hookimpl
def robustcheck_checks() -> list[Declaration]:
    from robustcheck.checks import CHECKS

    return list(CHECKS.values())


@hookimpl
def robustcheck_tagger_loaders() -> list[Declaration]:
    from robustcheck.taggers.loaders import LOADERS

    return list(LOADERS.values())


@hookimpl
def robustcheck_data_readers() -> list[Declaration]:
    from robustcheck.data.formats import READERS

    return list(READERS.values())
