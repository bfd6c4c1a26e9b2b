"""generate as K independent jobs plus a merge (docs/profiles.md's SLURM-array recipe): 3 shards
merged are byte for byte one run's folder, manifest included; a merge refuses a missing,
unfinished or differently made shard."""
from __future__ import annotations

from pathlib import Path

import pytest

from stage_runner import run_entry, write_params

SMALL = {"backend": "shapes", "max_categories": 4, "per_category": 2, "image_size": 32}


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _ws(path: Path, **generate) -> Path:
    path.mkdir(parents=True)
    write_params(path, generate={**SMALL, **generate})
    return path


def test_three_shards_merge_to_one_runs_bytes(tmp_path):
    one = _ws(tmp_path / "one")
    code, err, _ = run_entry("generate", one)
    assert code == 0, err

    ws = _ws(tmp_path / "sharded")
    for i in range(3):  # independent jobs: any order, no process group
        code, err, out = run_entry("generate", ws, "--shard", f"{2 - i}/3")
        assert code == 0, err
    shards = ws / "data" / "objects_shards"
    assert sorted(p.name for p in shards.iterdir()) == ["0-of-3", "1-of-3", "2-of-3"]
    made = [_tree(shards / f"{i}-of-3" / "images") for i in range(3)]
    assert all(made) and not set(made[0]) & set(made[1])  # each shard its own categories
    code, err, out = run_entry("generate", ws, "--merge", "3")
    assert code == 0, err
    assert "16 images (0 made, 16 reused)" in out  # the merge makes nothing itself
    assert _tree(ws / "data" / "objects") == _tree(one / "data" / "objects")
    assert len(_tree(one / "data" / "objects")) == 2 + 8 * 2  # manifest, _config.json, 16 pictures


def test_merge_refuses_missing_unfinished_or_other_shards(tmp_path):
    ws = _ws(tmp_path / "ws")
    assert run_entry("generate", ws, "--shard", "0/2")[0] == 0
    code, err, _ = run_entry("generate", ws, "--merge", "2")
    assert code == 1 and "1-of-2: no shard 1/2" in err[-1]
    assert run_entry("generate", ws, "--shard", "1/2")[0] == 0
    (ws / "data" / "objects_shards" / "1-of-2" / "manifest.parquet").unlink()  # a job cut off before its end
    code, err, _ = run_entry("generate", ws, "--merge", "2")
    assert code == 1 and "has not finished" in err[-1]
    write_params(ws, generate={**SMALL, "seed": 1})
    code, err, _ = run_entry("generate", ws, "--merge", "2")
    assert code == 1 and "made with other generate params" in err[-1]
    assert not (ws / "data" / "objects").exists()  # nothing half-merged


@pytest.mark.parametrize("args", [("--shard", "3/3"), ("--shard", "x"), ("--merge", "two"), ("--bogus", "1")])
def test_bad_shard_arguments_are_one_line_errors(tmp_path, args):
    code, err, _ = run_entry("generate", _ws(tmp_path / "ws"), *args)
    assert code == 1 and len(err) == 1 and err[0].startswith("[generate] error:")
