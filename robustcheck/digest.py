"""Content fingerprints of files and settings (sha256), for reports and baselines."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

_CACHE: dict[tuple[str, int, int], str] = {}


def file_digest(path: str | Path) -> str:
    """sha256 of a file's bytes (a folder: of its files in order), cached by size and mtime."""
    path = Path(path)
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns)
    if key not in _CACHE:
        digest = hashlib.sha256()
        files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
        for file in files:
            with file.open("rb") as handle:
                while block := handle.read(1 << 20):
                    digest.update(block)
        _CACHE[key] = digest.hexdigest()
    return _CACHE[key]


def json_digest(value: Any) -> str:
    """sha256 of a value's canonical JSON (sorted keys)."""
    text = json.dumps(value, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()
