"""The generate stage as K independent jobs and a merge (a SLURM array, several machines, no shared
process group).

Job *i* of K (``python stages/generate.py --shard i/K``) makes categories *i*, *i + K*, ... into
``<root>/<i>-of-<K>/``, resumable like the stage itself; the merge (``--merge K``) checks that every
shard finished with the same params, copies their pictures into the stage's folder and writes its
manifest: the same bytes as one ``python stages/generate.py`` (every picture depends only on its
own seed, see :func:`pin.synth.generate.sample_seed`).
"""
from __future__ import annotations

import json
from pathlib import Path

from pin.errors import PinError
from pin.io import atomic_write_bytes, fingerprint
from pin.params import GenerateParams
from pin.synth.generate import MANIFEST, GenerateResult, _LocalState, make_backend, run_config, run_generate

SHARDS_DIR = "data/objects_shards"


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/K"`` -> (i, K), 0 <= i < K (SLURM: ``$SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``)."""
    try:
        i, k = (int(v) for v in text.split("/"))
    except ValueError:
        raise PinError(f"--shard: expected i/K, e.g. 0/8 (got {text!r})") from None
    if not 0 <= i < k:
        raise PinError(f"--shard: need 0 <= i < K (got {text!r})")
    return i, k


def shard_dir(root: str | Path, i: int, k: int) -> Path:
    return Path(root) / f"{i}-of-{k}"


def run_shard(params: GenerateParams, shard: tuple[int, int], root: str | Path = SHARDS_DIR,
              progress: bool = True) -> GenerateResult:
    """One job: shard i of K, in its own folder (one process; no process group needed)."""
    return run_generate(params, shard_dir(root, *shard), progress=progress, state=_LocalState(), shard=shard)


def merge_shards(params: GenerateParams, k: int, out_dir: str | Path = "data/objects",
                 root: str | Path = SHARDS_DIR, backend=None) -> GenerateResult:
    """The K shards' pictures and one manifest in ``out_dir``, as one run would have made them. A
    shard that is missing, unfinished or made with other params is an error naming its folder."""
    if k < 1:
        raise PinError(f"--merge: K must be >= 1 (got {k})")
    backend = backend or make_backend(params)
    config = run_config(params, backend)
    shards = [shard_dir(root, i, k) for i in range(k)]
    for i, folder in enumerate(shards):
        try:
            have = json.loads((folder / "_config.json").read_text()).get("fingerprint")
        except (OSError, ValueError):
            raise PinError(f"{folder}: no shard {i}/{k} here; run `python stages/generate.py "
                           f"--shard {i}/{k}`") from None
        if have != fingerprint({**config, "shard": [i, k]}):
            raise PinError(f"{folder}: made with other generate params; rerun `python stages/generate.py "
                           f"--shard {i}/{k}`")
        if not (folder / MANIFEST).is_file():
            raise PinError(f"{folder}: shard {i}/{k} has not finished; rerun it to resume")
    out_dir = Path(out_dir)
    # run_generate (one process) prepares out_dir, finds every picture made and writes the manifest
    copy_pictures(shards, out_dir, config)
    return run_generate(params, out_dir, backend=backend, progress=False, state=_LocalState())


def copy_pictures(shards: list[Path], out_dir: Path, config: dict) -> None:
    from pin.io import prepare_resumable_dir

    prepare_resumable_dir(out_dir, config)  # another config's pictures are removed, never mixed in
    for folder in shards:
        for src in sorted((folder / "images").rglob("*")):
            dest = out_dir / src.relative_to(folder)
            if src.is_file() and not src.name.startswith(".") and not dest.exists():
                atomic_write_bytes(dest, src.read_bytes())
