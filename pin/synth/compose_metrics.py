"""The compose stage's metrics, read back from the shards (a resumed run reports the same numbers
as a fresh one)."""
from __future__ import annotations

from pathlib import Path

from pin.categories import query_name
from pin.params import ComposeParams
from pin.synth import shards as sh
from pin.synth.backgrounds import BackgroundSource
from pin.synth.objects import ObjectPool
from pin.synth.shards import SPLITS


def collect_metrics(out_dir: str | Path, p: ComposeParams, pools: dict[str, ObjectPool],
                    backgrounds: BackgroundSource) -> dict:
    """Metrics read back from the shards (so a resumed run reports the same numbers)."""
    out_dir = Path(out_dir)
    splits, unreadable = {}, set()
    for split in SPLITS:
        table = sh.read_split(out_dir / split, columns=["background", "objects"])
        objs = table.column("objects").to_pylist()
        bgs = table.column("background").to_pylist()
        counts = [len(o) for o in objs]
        hist = {str(a): counts.count(a) for a in range(1, p.a_max + 1)}
        cats = {ob["category"] for o in objs for ob in o}
        bg_kinds: dict[str, int] = {}
        for b in bgs:
            kind = b.split(":", 1)[0]
            bg_kinds[kind] = bg_kinds.get(kind, 0) + 1
        meta = {"object_read_failures": 0, "background_read_failures": 0, "a_reduced": 0}
        for shard in sh.list_shards(out_dir / split):
            m = sh.read_meta(shard)
            for k in ("object_read_failures", "background_read_failures", "a_reduced"):
                meta[k] += int(m.get(k, 0))
            unreadable |= set(m.get("unreadable_objects", []))
        splits[split] = {
            "images": len(objs),
            "objects": int(sum(counts)),
            "objects_per_image": hist,
            "categories_used": len(cats),
            "categories_available": len(pools[split].categories),
            "objects_available": len(pools[split]),
            "shards": len(sh.list_shards(out_dir / split)),
            "backgrounds": dict(sorted(bg_kinds.items())),
            "a_reduced": meta["a_reduced"],
            "object_read_failures": meta["object_read_failures"],
            "background_read_failures": meta["background_read_failures"],
            "positional_referrals": sum(
                1 for o in objs for ob in o if ob["referral"] != query_name(ob["category"], p.query_names == "clean")),
        }
    return {
        "splits": splits,
        "images": sum(s["images"] for s in splits.values()),
        "unreadable_objects": sorted(unreadable)[:50],
        "backgrounds": backgrounds.describe(),
        "image_size": p.image_size,
        "grid": p.grid,
        "format": p.format,
    }
