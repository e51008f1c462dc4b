"""The names of spec files and the spec format version: no imports beyond ``re``.

The pytest plugin imports this module while pytest loads it, to recognise the files it collects.
"""

from __future__ import annotations

import re
from pathlib import Path

SPEC_VERSION = 1
SPEC_NAME = re.compile(r"^(robustness|.+\.robust)\.(toml|ya?ml)$")


def is_spec_file(path: Path) -> bool:
    """Whether pytest --robustcheck collects this file."""
    return bool(SPEC_NAME.match(path.name))
