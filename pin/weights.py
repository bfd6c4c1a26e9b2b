"""Reading weight files (``.safetensors``, ``.pt``, ``.bin``): the one place a damaged or truncated
file becomes a one-line PinError naming it, instead of a loader's traceback.

:func:`check_weights_file` reads only what says whether a file is whole (the safetensors header
and its byte count; a torch zip's central directory at the end), so a folder of large files is
checked in milliseconds before a library (transformers, open_clip) loads it;
:func:`read_weights` loads a file's tensors.
"""
from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

from pin.errors import PinError

WEIGHT_SUFFIXES = (".safetensors", ".pt", ".pth", ".bin", ".ckpt")


def _damaged(path: Path, why: str) -> PinError:
    return PinError(f"{path}: damaged or truncated weights file ({why}); download or save it again")


def _check_safetensors(path: Path) -> None:
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise _damaged(path, f"{size} bytes, no safetensors header")
        (n,) = struct.unpack("<Q", head)
        if n > size - 8:
            raise _damaged(path, f"header of {n} bytes in a {size}-byte file")
        try:
            header = json.loads(f.read(n))
        except (ValueError, UnicodeDecodeError) as err:
            raise _damaged(path, f"unreadable safetensors header: {err}") from None
    if not isinstance(header, dict):
        raise _damaged(path, "unreadable safetensors header")
    ends = [v["data_offsets"][1] for k, v in header.items()
            if k != "__metadata__" and isinstance(v, dict) and isinstance(v.get("data_offsets"), list)
            and len(v["data_offsets"]) == 2]
    want = 8 + n + max(ends, default=0)
    if size != want:
        raise _damaged(path, f"{size} bytes, its header describes {want}")


def check_weights_file(path: str | Path) -> None:
    """A PinError naming ``path`` when it is missing or visibly damaged: a safetensors file whose
    header or length is wrong, a torch zip checkpoint whose directory cannot be read (truncated).
    A legacy (pickle) ``.pt``/``.bin`` is only checked by :func:`read_weights`."""
    path = Path(path)
    if not path.is_file():
        raise PinError(f"{path}: weights file not found")
    try:
        if path.suffix == ".safetensors":
            _check_safetensors(path)
            return
        with open(path, "rb") as f:
            zipped = f.read(4) == b"PK\x03\x04"
        if zipped:
            try:
                with zipfile.ZipFile(path) as z:
                    z.infolist()
            except (zipfile.BadZipFile, EOFError) as err:
                raise _damaged(path, f"torch zip checkpoint: {err}") from None
    except OSError as err:
        raise PinError(f"{path}: cannot read ({err.strerror or err})") from None


def read_weights(path: str | Path) -> dict:
    """The tensors of a ``.safetensors`` file, or the object of a ``.pt``/``.bin`` (read with
    ``weights_only=True``: no code runs); any failure is a PinError naming ``path``."""
    import torch

    path = Path(path)
    check_weights_file(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            return load_file(str(path))
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - pickle, zip, safetensors and torch raise many types
        raise _damaged(path, f"{type(err).__name__}: {' '.join(str(err).split())[:300]}") from None


def check_weights_folder(folder: str | Path) -> None:
    """:func:`check_weights_file` on every weights file directly in ``folder`` (a transformers
    save_pretrained folder) - a no-op for a hub id that is not a local folder."""
    folder = Path(folder)
    if folder.is_dir():
        for f in sorted(folder.iterdir()):
            if f.is_file() and f.suffix in WEIGHT_SUFFIXES:
                check_weights_file(f)


__all__ = ["check_weights_file", "check_weights_folder", "read_weights", "WEIGHT_SUFFIXES"]
