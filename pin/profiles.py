"""Profiles: ``profiles/<profile>.yaml`` laid over params.yaml.

``profile`` (params.yaml, top level) names a file of protocol values, one per VLM of the paper
(profiles/openflamingo.yaml, profiles/blip2.yaml; profiles/offline.yaml sets nothing), that every
stage lays over params.yaml as it loads it (:func:`pin.params.load_yaml`). dvc.yaml lists the
file's sections as each stage's params (``profiles/${profile}.yaml``), so DVC reruns what a profile
changes. A key the profile sets is the profile's: params.yaml must keep its default there (a value
set both ways is refused, naming the key), and ``-S profiles/<profile>.yaml:key=value`` changes it.
"""
from __future__ import annotations

import copy
import re
from collections.abc import Mapping
from pathlib import Path

import yaml


class ProfileError(ValueError):
    """A bad profile choice or file, or a value set both in params.yaml and by the profile."""

PROFILES_DIR = "profiles"
DEFAULT_PROFILE = "offline"
_PROFILE_NAME = re.compile(r"^[A-Za-z0-9_-]+$")
TOP_DEFAULTS = {"method": "pin", "profile": DEFAULT_PROFILE}  # params.yaml's top-level keys


def profile_path(raw: dict, root: str | Path = ".") -> Path:
    """The profile file ``raw`` (params.yaml's mapping) selects; the name is checked."""
    name = raw.get("profile", DEFAULT_PROFILE)
    if not isinstance(name, str) or not _PROFILE_NAME.match(name):
        raise ProfileError(f"profile: expected a profile name (a file in {PROFILES_DIR}/), got {name!r}")
    path = Path(root) / PROFILES_DIR / f"{name}.yaml"
    if not path.is_file():
        there = sorted(p.stem for p in (Path(root) / PROFILES_DIR).glob("*.yaml"))
        raise ProfileError(f"profile: no {PROFILES_DIR}/{name}.yaml (profiles: {', '.join(there) or 'none'})")
    return path


def profile_values(path: str | Path) -> dict[str, object]:
    """The dotted keys a profile file sets and their values (empty sections set nothing)."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as err:
        raise ProfileError(f"{path}: cannot read the profile ({type(err).__name__}: {err})") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    out: dict[str, object] = {}

    def walk(node: dict, prefix: str) -> None:
        for key, value in node.items():
            if isinstance(value, dict) and (value or not prefix):
                walk(value, f"{prefix}{key}.")
            else:
                out[f"{prefix}{key}"] = value
    walk(data, "")
    return out


def code_default(key: str, sections: Mapping[str, type]) -> object:
    """The code's default of a dotted params key (params.yaml holds the same); KeyError if unknown.
    ``sections``: :data:`pin.params.SECTIONS` (each section's model class)."""
    first, *rest = key.split(".")
    if not rest:
        return TOP_DEFAULTS[first]
    node: object = sections[first]()
    for part in rest:
        if part not in getattr(type(node), "model_fields", {}):
            raise KeyError(key)
        node = getattr(node, part)
    return node.model_dump() if hasattr(node, "model_dump") else node


def apply_profile(raw: dict, root: str | Path, sections: Mapping[str, type]) -> dict:
    """``raw`` with its profile's values laid over it (a new mapping; ``raw`` is not changed).
    ``sections``: :data:`pin.params.SECTIONS`, for the defaults."""
    if raw.get("profile", DEFAULT_PROFILE) == DEFAULT_PROFILE and not (Path(root) / PROFILES_DIR).is_dir():
        return raw  # a params file outside the project (tests, scripts): the offline profile sets nothing
    path = profile_path(raw, root)
    merged = copy.deepcopy(raw)
    rel = f"{PROFILES_DIR}/{path.name}"
    for key, value in profile_values(path).items():
        *parents, last = key.split(".")
        node = merged
        for part in parents:
            if not isinstance(node.get(part, {}), dict):
                raise ProfileError(f"{key}: {rel} sets it, but params.yaml's {part} is not a mapping")
            node = node.setdefault(part, {})
        if last in node and node[last] != value:
            try:
                default = code_default(key, sections)
            except KeyError:
                raise ProfileError(f"{key}: {rel} sets an unknown key") from None
            if node[last] != default:
                raise ProfileError(
                    f"{key}: params.yaml sets {node[last]!r} and {rel} sets {value!r}; a profile's value is "
                    f"changed in its file (dvc exp run -S {rel}:{key}=...), params.yaml keeps the default {default!r}")
        node[last] = value
    return merged
