"""Reading a spec file (TOML or YAML) into a document; a key given twice is an error."""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from typing import Any

from robustcheck.spec.problems import error

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib


def read_document(path: Path) -> dict[str, Any]:
    """Parse a TOML or YAML file into a dict, with parse errors as SpecError.

    A key given twice in one table is an error in both formats (tomllib rejects it; the YAML
    loader here does too, where ``yaml.safe_load`` would silently keep the last value).
    """
    if not path.is_file():
        raise error(path, "spec file not found", fix="check the path")
    text = path.read_text(encoding="utf-8")
    try:
        if path.suffix == ".toml":
            doc = tomllib.loads(text)
        else:
            import yaml

            doc = yaml.load(text, Loader=_unique_key_loader())  # noqa: S506 (a SafeLoader)
    except _DuplicateKey as exc:
        raise error(
            path,
            f"duplicate key `{exc.key}`: given on line {exc.first} and again on line {exc.second}",
            exc.field,
            "keep one of the two (a YAML reader would silently use the last one)",
        ) from None
    except Exception as exc:  # parser errors carry their own line numbers
        message = str(exc)
        twice = "Cannot overwrite a value" in message or "Cannot declare" in message
        raise error(
            path,
            f"cannot parse: {message}",
            fix="a key or table is given twice: keep one" if twice else None,
        ) from None
    if not isinstance(doc, dict):
        raise error(path, "the spec must be a table of sections")
    return doc


class _DuplicateKey(Exception):
    """A YAML mapping gives one key twice (raised by the loader, turned into a SpecError)."""

    def __init__(self, key: object, field: str, first: int, second: int) -> None:
        super().__init__(f"duplicate key {key!r} at {field}")
        self.key = key
        self.field = field
        self.first = first
        self.second = second


@functools.cache
def _unique_key_loader() -> type:
    """A yaml.SafeLoader whose mappings refuse a key given twice (built when YAML is read)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        _root: yaml.Node | None = None

        def construct_document(self, node: yaml.Node) -> Any:
            self._root = node
            return super().construct_document(node)

        def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> Any:
            if isinstance(node, yaml.MappingNode):
                seen: dict[Any, int] = {}
                for key_node, _ in node.value:
                    if key_node.tag == "tag:yaml.org,2002:merge":
                        continue  # `<<: *anchor` entries may be overridden: that is their use
                    key = self.construct_object(key_node, deep=True)
                    try:
                        hash(key)
                    except TypeError:
                        continue  # the base constructor reports unhashable keys
                    line = key_node.start_mark.line + 1
                    if key in seen:
                        where = _yaml_node_path(self._root, node)
                        field = f"{where}.{key}" if where else str(key)
                        raise _DuplicateKey(key, field, seen[key], line)
                    seen[key] = line
            return super().construct_mapping(node, deep=deep)

    return UniqueKeyLoader


def _yaml_node_path(root: Any, target: Any) -> str:
    """The key path (``model``, ``checks[1]``) from the document root to a YAML node."""
    import yaml

    stack: list[tuple[Any, str]] = [(root, "")]
    visited: set[int] = set()
    while stack:
        node, where = stack.pop()
        if node is target:
            return where
        if id(node) in visited:  # aliases may make the node graph cyclic
            continue
        visited.add(id(node))
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                name = key.value if isinstance(key, yaml.ScalarNode) else "?"
                stack.append((value, f"{where}.{name}" if where else str(name)))
        elif isinstance(node, yaml.SequenceNode):
            stack.extend((item, f"{where}[{i}]") for i, item in enumerate(node.value))
    return ""
