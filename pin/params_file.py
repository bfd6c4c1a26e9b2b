"""params.yaml as a mapping: the file-level checks (missing, unreadable, empty, not YAML, a key
given twice, not a mapping), each a ParamsError naming the file. :mod:`pin.params` validates
what is inside."""
from __future__ import annotations

from pathlib import Path

import yaml


class ParamsError(ValueError):
    """A bad params file or value; the message names the offending key."""


class _DuplicateKey(yaml.YAMLError):
    def __init__(self, key: object, line: int, first: int):
        super().__init__(f"duplicate key {key!r} at line {line} (first at line {first})")


class _UniqueKeyLoader(yaml.SafeLoader):
    """safe_load that refuses a key given twice in one mapping (PyYAML keeps the last; DVC refuses)."""

    def construct_mapping(self, node, deep=False):
        seen: dict = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":  # `<<: *anchor` may be overridden
                continue
            key = self.construct_object(key_node, deep=True)
            if isinstance(key, (str, int, float, bool)) and key in seen:
                raise _DuplicateKey(key, key_node.start_mark.line + 1, seen[key])
            seen[key] = key_node.start_mark.line + 1
        return super().construct_mapping(node, deep=deep)


def read_mapping(path: str | Path) -> dict:
    """The YAML mapping in ``path`` (PyYAML's safe loader, refusing duplicate keys)."""
    path = Path(path)
    if not path.exists():
        raise ParamsError(f"{path}: params file not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as err:
        raise ParamsError(f"{path}: cannot read ({err})") from None
    if not text.strip():
        raise ParamsError(f"{path}: the params file is empty")
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except _DuplicateKey as err:
        raise ParamsError(f"{path}: {err}") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where is not None else ""
        what = getattr(err, "problem", None) or type(err).__name__
        raise ParamsError(f"{path}: not valid YAML{at}: {what}") from None
    if not isinstance(data, dict):
        raise ParamsError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data
