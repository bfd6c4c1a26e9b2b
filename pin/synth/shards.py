"""Parquet shards of composed images: schema, atomic writes, readers.

One shard = ``<split>/part-NNNNN.parquet`` holding ``compose.shard_size`` consecutive images of
a split, one row group, no compression (the images are JPEG/PNG already), no statistics, so the
same records always give the same bytes. Per-shard composition statistics travel in the schema
metadata under the key ``pin`` (JSON).

Columns::

    image_id   int64    1-based index of the image in its split (COCO-safe ids)
    image      binary   encoded image (JPEG or PNG)
    format     string   "jpeg" | "png"
    width      int32
    height     int32
    background string   background id ("skimage:coffee", "texture:stripes:123", "file:a/b.jpg")
    seed       int64    per-image seed: np.random.default_rng(seed) redraws the image
    objects    list<struct<category: string, box: list<int32>, grid_box: list<int32>,
                           referral: string, source: string>>
               in paste order (later objects lie on top); box = [x1, y1, x2, y2] pixels with
               x2, y2 exclusive; grid_box = the same in grid cells; source = object PNG path
               relative to the objects folder.
"""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from pin.io import tmp_path_for

OBJECT_TYPE = pa.struct([
    ("category", pa.string()),
    ("box", pa.list_(pa.int32())),
    ("grid_box", pa.list_(pa.int32())),
    ("referral", pa.string()),
    ("source", pa.string()),
    ("appearance", pa.list_(pa.int32())),  # [brightness level, saturation level]; [] without compose.appearance
])
SCHEMA = pa.schema([
    ("image_id", pa.int64()),
    ("image", pa.binary()),
    ("format", pa.string()),
    ("width", pa.int32()),
    ("height", pa.int32()),
    ("background", pa.string()),
    ("seed", pa.int64()),
    ("objects", pa.list_(OBJECT_TYPE)),
])
META_KEY = b"pin"
SPLITS = ("train", "val", "heldout", "pretrain")


def shard_name(k: int) -> str:
    return f"part-{k:05d}.parquet"


def shard_ranges(n: int, shard_size: int) -> list[tuple[int, int]]:
    """[start, stop) image index ranges of the shards of a split with n images."""
    return [(s, min(n, s + shard_size)) for s in range(0, n, shard_size)]


def to_table(records: list[dict], meta: dict | None = None) -> pa.Table:
    cols = {name: [r[name] for r in records] for name in SCHEMA.names}
    table = pa.Table.from_pydict(cols, schema=SCHEMA)
    if meta is not None:
        table = table.replace_schema_metadata({META_KEY: json.dumps(meta, sort_keys=True).encode()})
    return table


def write_shard(path: str | Path, records: list[dict], meta: dict | None = None) -> None:
    """Write a shard atomically (temp name + os.replace): readers never see half a shard."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    table = to_table(records, meta)
    tmp = tmp_path_for(path)
    try:
        pq.write_table(table, tmp, compression="none", write_statistics=False,
                       row_group_size=max(1, len(records)))
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def check_shard(path: str | Path, rows: int) -> str | None:
    """Why a shard already on disk cannot be reused (an unreadable footer, another row count, a
    schema of another version), or None when it can."""
    try:
        f = pq.ParquetFile(path)
        have, schema = f.metadata.num_rows, f.schema_arrow
    except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a damaged file
        return f"not a readable shard ({type(err).__name__}: {' '.join(str(err).split())})"
    if have != rows:
        return f"{have} rows, expected {rows}"
    if schema.remove_metadata() != SCHEMA:
        return "another shard schema"
    return None


def list_shards(split_dir: str | Path) -> list[Path]:
    return sorted(Path(split_dir).glob("part-*.parquet"))


def read_meta(path: str | Path) -> dict:
    md = pq.read_schema(path).metadata or {}
    return json.loads(md[META_KEY]) if META_KEY in md else {}


def read_split(split_dir: str | Path, columns: list[str] | None = None) -> pa.Table:
    """All shards of a split as one table (empty table with the schema when there are none)."""
    shards = list_shards(split_dir)
    if not shards:
        schema = SCHEMA if columns is None else pa.schema([SCHEMA.field(c) for c in columns])
        return schema.empty_table()
    return pa.concat_tables([pq.read_table(p, columns=columns) for p in shards])


def iter_records(split_dir: str | Path, columns: list[str] | None = None) -> Iterator[dict]:
    for p in list_shards(split_dir):
        yield from pq.read_table(p, columns=columns).to_pylist()


__all__: Iterable[str] = [
    "SCHEMA", "OBJECT_TYPE", "SPLITS", "shard_name", "shard_ranges", "to_table", "write_shard",
    "check_shard", "list_shards", "read_meta", "read_split", "iter_records",
]
