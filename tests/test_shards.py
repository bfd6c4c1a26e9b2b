"""Shard format: schema, atomic deterministic writes, round trip through pandas and pyarrow."""
from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
from PIL import Image

from pin.io import remove_temp_files
from pin.synth import shards as sh


def _jpeg(w: int, h: int, seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "JPEG", quality=90)
    return buf.getvalue()


def _records(n: int) -> list[dict]:
    out = []
    for i in range(n):
        w, h = 32 + 8 * i, 48
        objects = [{"category": "dog", "box": [0, 8, 16, 24], "grid_box": [0, 1, 2, 3],
                    "referral": "left dog", "source": "images/dog/0.png", "appearance": []}]
        if i % 2:
            objects.append({"category": "hot_dog", "box": [16, 0, 32, 48], "grid_box": [2, 0, 4, 6],
                            "referral": "hot dog", "source": "images/hot_dog/3.png", "appearance": [3, 1]})
        out.append({"image_id": i + 1, "image": _jpeg(w, h, i), "format": "jpeg", "width": w,
                    "height": h, "background": f"texture:noise:{i}", "seed": 2**62 + i,
                    "objects": objects})
    return out


def test_round_trip_pandas_and_pyarrow(tmp_path):
    recs = _records(3)
    path = tmp_path / "train" / sh.shard_name(0)
    sh.write_shard(path, recs, {"a_reduced": 2, "unreadable_objects": []})
    assert path.name == "part-00000.parquet"
    assert not list(tmp_path.rglob("*.tmp"))

    table = pq.read_table(path)
    assert table.schema.remove_metadata() == sh.SCHEMA
    assert table.to_pylist() == recs
    assert sh.read_meta(path) == {"a_reduced": 2, "unreadable_objects": []}

    df = pd.read_parquet(path)
    assert df["image_id"].tolist() == [1, 2, 3]
    for rec, (_, row) in zip(recs, df.iterrows()):
        im = Image.open(io.BytesIO(row["image"])).convert("RGB")
        assert im.size == (row["width"], row["height"]) == (rec["width"], rec["height"])
        assert [list(o["box"]) for o in row["objects"]] == [o["box"] for o in rec["objects"]]
        assert [o["referral"] for o in row["objects"]] == [o["referral"] for o in rec["objects"]]

    assert list(sh.iter_records(tmp_path / "train")) == recs
    assert sh.read_split(tmp_path / "train", ["image_id"]).column("image_id").to_pylist() == [1, 2, 3]
    assert sh.read_split(tmp_path / "nothing").num_rows == 0


def test_same_records_same_bytes(tmp_path):
    recs = _records(4)
    sh.write_shard(tmp_path / "a.parquet", recs, {"x": 1})
    sh.write_shard(tmp_path / "b.parquet", recs, {"x": 1})
    assert (tmp_path / "a.parquet").read_bytes() == (tmp_path / "b.parquet").read_bytes()


def test_shard_ranges_and_temp_cleanup(tmp_path):
    assert sh.shard_ranges(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert sh.shard_ranges(0, 4) == []
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / ".part-00000.parquet.123.tmp").write_bytes(b"x")
    (tmp_path / "s" / "part-00000.parquet").write_bytes(b"x")
    assert remove_temp_files(tmp_path) == 1  # the one cleaner (pin.io) the compose stage calls
    assert [p.name for p in (tmp_path / "s").iterdir()] == ["part-00000.parquet"]
