"""Reading the composed Parquet shards back: images plus their objects, for training and eval."""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import pyarrow.parquet as pq
from PIL import Image

from pin.errors import PinError


@dataclass(frozen=True)
class ComposedObject:
    category: str
    box: tuple[int, int, int, int]  # pixels, x2/y2 exclusive
    grid_box: tuple[int, int, int, int]  # grid cells (x1, y1, x2, y2)
    referral: str
    appearance: tuple[int, ...] = ()  # (brightness level a, saturation level s); () without compose.appearance


@dataclass(frozen=True)
class ComposedImage:
    image_id: int
    image: bytes
    width: int
    height: int
    objects: tuple[ComposedObject, ...]

    def pil(self) -> Image.Image:
        return Image.open(io.BytesIO(self.image)).convert("RGB")


def shard_paths(split_dir: str | Path) -> list[Path]:
    split_dir = Path(split_dir)
    paths = sorted(split_dir.glob("part-*.parquet"))
    if not paths:
        raise PinError(f"{split_dir}: no part-*.parquet shards (run `dvc repro compose` first)")
    return paths


def read_split_records(split_dir: str | Path, limit: int | None = None) -> list[ComposedImage]:
    """Every image of a composed split (the first ``limit``), decoded into records for training
    and evaluation (:func:`pin.synth.shards.read_split` gives the raw Arrow table instead)."""
    out: list[ComposedImage] = []
    cols = ["image_id", "image", "width", "height", "objects"]
    for path in shard_paths(split_dir):
        try:
            rows = pq.read_table(path, columns=cols).to_pylist()
        except Exception as err:  # noqa: BLE001 - pyarrow raises several types for a damaged file
            raise PinError(f"{path}: not a readable shard ({type(err).__name__}: {err}); delete it and "
                           "rerun `dvc repro compose` (the other shards are kept)") from None
        for row in rows:
            objs = tuple(
                ComposedObject(
                    category=o["category"],
                    box=tuple(int(v) for v in o["box"]),
                    grid_box=tuple(int(v) for v in o["grid_box"]),
                    referral=o.get("referral") or o["category"],
                    appearance=tuple(int(v) for v in (o.get("appearance") or ())),
                )
                for o in row["objects"]
            )
            out.append(ComposedImage(row["image_id"], row["image"], row["width"], row["height"], objs))
            if limit is not None and len(out) >= limit:
                return out
    return out
