"""The rehearsal's flags: the committed profile (``-S profile=<vlm>``, profiles/<vlm>.yaml as it
is) plus what a user sets as the docs give it (the bash arrays ``DATA`` and ``WEIGHTS`` of
docs/profiles.md: paths, hub ids, the data sets evaluated), every path pointed at its stand-in
and the sizes shrunk, nothing else changed. A documented flag that is not a path with a
stand-in (or the data-set list) is an error, so a protocol value cannot hide in the docs and a
new path cannot slip past the rehearsal unread. A size the profile sets is shrunk in the
profile file (``-S profiles/<vlm>.yaml:key=value``), the others in params.yaml."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from pin.errors import PinError
from pin.profiles import PROFILES_DIR, profile_values
from rehearsal.datasets import DataSets
from rehearsal.standins import StandIns

DATASETS = ("coco", "pvoc", "lvis", "refcoco")
DOCS = ("docs/profiles.md",)  # where the arrays of what a user sets live
ARRAYS = ("DATA", "WEIGHTS")

# What the rehearsal shrinks (the committed value is replaced, or the key added): sizes only.
SIZES = {
    "generate.image_size": "64", "generate.per_category": "4", "generate.max_categories": "2",
    "generate.steps": "2", "generate.batch_size": "8",
    "filter.min_per_class": "1",  # random CLIP scores: few objects pass X-Paste's best-1 rule
    "compose.image_size": "112", "compose.n_train": "32", "compose.n_val": "8", "compose.n_heldout": "8",
    "compose.n_pretrain": "0", "compose.shard_size": "32", "compose.workers": "1",
    "train.steps": "3", "train.batch_size": "8", "train.checkpoint_every": "2", "train.log_every": "1",
    "eval.batch_size": "8", "eval.random_draws": "2", "eval.gallery_size": "4",
}

# Tab. 3 "Higher resolution" as docs/paper.md gives it, and its size at the stand-ins' scale
# (their encoders take 32 px in patches of 8; the paper's take 224 in patches of 14): OpenFlamingo
# at twice its input, BLIP-2 (caption-finetuned, 364) at 7 patches a side, a multiple of its grid.
TABLE3 = {
    "openflamingo": {"vlm.image_size": "448", "compose.image_size": "448"},
    "blip2": {"vlm.blip2_model": "Salesforce/blip2-opt-2.7b-coco", "vlm.image_size": "364",
              "compose.image_size": "364"},
}
TABLE3_SIZES = {"448": "64", "364": "56"}


def _array(text: str, name: str) -> list[str] | None:
    """The words of the bash array ``name=( ... )`` in ``text`` (quotes and escapes honoured)."""
    m = re.search(rf"(?<![\w$]){name}=\(", text)
    if m is None:
        return None
    i, quote = m.end(), None
    while i < len(text):
        ch = text[i]
        if ch == "\\" and quote != "'":
            i += 2
            continue
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == ")":
            return shlex.split(text[m.end():i])
        i += 1
    raise PinError(f"unterminated bash array {name}=( in the docs")


def _pairs(words: list[str], name: str) -> dict[str, str]:
    if len(words) % 2 or any(w != "-S" for w in words[::2]):
        raise PinError(f"docs array {name}: expected only '-S key=value' pairs, got {words}")
    out = {}
    for kv in words[1::2]:
        key, sep, value = kv.partition("=")
        if not sep:
            raise PinError(f"docs array {name}: {kv!r} is not key=value")
        out[key] = value
    return out


def documented_flags(root: Path) -> dict[str, str]:
    """``DATA`` + ``WEIGHTS`` of docs/profiles.md: what a user sets for the paper profile."""
    for rel in DOCS:
        path = root / rel
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        arrays = {n: _array(text, n) for n in ARRAYS}
        if all(v is not None for v in arrays.values()):
            return {k: v for n in ARRAYS for k, v in _pairs(arrays[n], n).items()}
    raise PinError(f"no arrays {'=(...) '.join(ARRAYS)}=(...) in {', '.join(DOCS)}")


def _hydra_value(value: str) -> str:
    """A value as DVC's ``-S`` (Hydra's override grammar) reads it: quoted when it holds a
    character the grammar gives a meaning to, such as the parentheses of ``refs(unc).p``."""
    return f"'{value}'" if re.search(r"[()\[\]{}:=,'\"\\ ]", value) else value


def path_values(models: StandIns, data: DataSets) -> dict[str, str]:
    """Every path (or hub id) param a user sets -> its stand-in."""
    of_dir = models.of_checkpoint.parent if models.of_checkpoint else None
    return {k: str(v) for k, v in {
        "generate.model": models.sd, "filter.pretrained": models.clip_weights,
        "compose.backgrounds": data.backgrounds, "vlm.checkpoint": of_dir, "vlm.lang_model": models.of_lang,
        "vlm.clip_pretrained": models.clip_weights, "vlm.blip2_model": models.blip2,
        "eval.paths.coco.annotations": data.coco_annotations, "eval.paths.coco.images": data.coco_images,
        "eval.paths.pvoc.root": data.voc_root, "eval.paths.lvis.annotations": data.lvis_annotations,
        "eval.paths.lvis.images": data.coco_root, "eval.paths.refcoco.refs": data.refcoco_refs,
        "eval.paths.refcoco.annotations": data.refcoco_annotations,
        "eval.paths.refcoco.images": data.refcoco_images,
    }.items() if v is not None}


def rehearsal_flags(docs: dict[str, str], vlm: str, models: StandIns, data: DataSets, root: Path,
                    table3: bool = False) -> list[str]:
    """``-S profile=<vlm>`` + the documented DATA and WEIGHTS (paths swapped) + the sizes (+ Tab.
    3's setting); as ``-S k=v`` argv."""
    profile = root / PROFILES_DIR / f"{vlm}.yaml"
    if not profile.is_file():
        raise PinError(f"no committed profile {profile}")
    committed = profile_values(profile)
    if committed.get("vlm.name") != vlm:
        raise PinError(f"{profile} does not set vlm.name={vlm}")
    paths = path_values(models, data)
    flags = {"profile": vlm}
    for key, value in {**docs, **(TABLE3[vlm] if table3 else {})}.items():
        if key in paths:
            flags[key] = _hydra_value(paths[key])
        elif key == "eval.datasets":
            flags[key] = value
        elif table3 and key in TABLE3[vlm]:
            flags[key] = TABLE3_SIZES[value]
        else:
            raise PinError(f"documented flag {key}={value}: not a path with a stand-in; a protocol value "
                           f"belongs in {PROFILES_DIR}/<vlm>.yaml")
    if not table3:  # dvc exp run leaves each run's params in the workspace: undo an earlier Tab. 3 run's
        flags["vlm.image_size"] = "null"
    sizes = {k: v for k, v in SIZES.items() if not (table3 and k in TABLE3[vlm])}
    for key, value in sizes.items():
        flags[f"{PROFILES_DIR}/{vlm}.yaml:{key}" if key in committed else key] = value
    tiny_clip = _hydra_value(str(models.clip_config))  # the architecture is a size: the tiny config, by path
    flags["filter.model"] = tiny_clip
    if vlm == "openflamingo":
        flags["vlm.clip_model"] = tiny_clip
    return [w for k, v in flags.items() for w in ("-S", f"{k}={v}")]
