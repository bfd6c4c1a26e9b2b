"""The base of every params.yaml section: strict keys, frozen values, no booleans for numbers."""
from __future__ import annotations

import types
import typing

from pydantic import BaseModel, ConfigDict, model_validator


def _numeric(annotation) -> bool:
    """int / float / an optional one (not bool: pydantic's lax mode would read `true` as 1)."""
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        return bool not in args and any(_numeric(a) for a in args)
    return False


class Section(BaseModel):
    """A params.yaml section. Validators name their key by starting the message with it
    (``"grid: must divide ..."``); :func:`_format_error` prefixes the section."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=False)

    @model_validator(mode="before")
    @classmethod
    def _no_bool_numbers(cls, data):
        # pydantic's lax mode reads `true` as 1: for a number that is a typo, not a value
        if isinstance(data, dict):
            for key, value in data.items():
                field = cls.model_fields.get(key)
                if isinstance(value, bool) and field is not None and _numeric(field.annotation):
                    raise ValueError(f"{key}: Input should be a number, not a boolean (got {value!r})")
        return data
