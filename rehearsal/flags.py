"""The paper profile's flags as the docs give them (the bash arrays ``DATA``, ``OF``, ``B2`` and
``REF`` of docs/paper.md), turned into the rehearsal's: every path pointed at its stand-in and
the sizes shrunk, nothing else changed. A documented path without a stand-in is an error, so a
new flag cannot slip past the rehearsal unread."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

from pin.errors import PinError
from rehearsal.datasets import DataSets
from rehearsal.standins import StandIns

DATASETS = ("coco", "pvoc", "lvis", "refcoco")
DOCS = ("docs/paper.md", "README.md")  # where the paper-profile arrays may live

# What the rehearsal shrinks (the documented value is replaced, or the key added): sizes only.
SIZES = {
    "generate.image_size": "64", "generate.per_category": "4", "generate.max_categories": "2",
    "generate.steps": "2", "generate.batch_size": "8",
    "filter.min_per_class": "1",  # random CLIP scores: few objects pass X-Paste's best-1 rule
    "compose.image_size": "112", "compose.n_train": "32", "compose.n_val": "8", "compose.n_heldout": "8",
    "compose.n_pretrain": "0", "compose.shard_size": "32", "compose.workers": "1",
    "train.steps": "3", "train.batch_size": "8", "train.checkpoint_every": "2", "train.log_every": "1",
    "eval.batch_size": "8", "eval.random_draws": "2", "eval.gallery_size": "4",
    "eval.datasets": f"[{','.join(DATASETS)}]",
}

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


def documented_flags(root: Path) -> dict[str, dict[str, str]]:
    """``DATA``, ``OF``, ``B2`` and ``REF`` of the paper profile, from the first doc holding them."""
    for rel in DOCS:
        path = root / rel
        text = path.read_text(encoding="utf-8") if path.is_file() else ""
        arrays = {n: _array(text, n) for n in ("DATA", "OF", "B2", "REF")}
        if all(v is not None for v in arrays.values()):
            return {n: _pairs(v, n) for n, v in arrays.items()}
    raise PinError(f"no paper-profile arrays DATA=(...) OF=(...) B2=(...) REF=(...) in {', '.join(DOCS)}")


def _hydra_value(value: str) -> str:
    """A value as DVC's ``-S`` (Hydra's override grammar) reads it: quoted when it holds a
    character the grammar gives a meaning to, such as the parentheses of ``refs(unc).p``."""
    return f"'{value}'" if re.search(r"[()\[\]{}:=,'\"\\ ]", value) else value


def path_values(models: StandIns, data: DataSets) -> dict[str, str]:
    """Every documented path param -> its stand-in."""
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


def rehearsal_flags(docs: dict[str, dict[str, str]], vlm: str, models: StandIns, data: DataSets) -> list[str]:
    """DATA + (OF | B2) + REF as documented, paths and sizes replaced; as ``-S k=v`` argv."""
    flags = {**docs["DATA"], **docs["OF" if vlm == "openflamingo" else "B2"], **docs["REF"]}
    if flags.get("vlm.name") != vlm:
        raise PinError(f"the docs' {'OF' if vlm == 'openflamingo' else 'B2'} array does not set vlm.name={vlm}")
    paths = path_values(models, data)
    for key, value in flags.items():
        if key in paths:
            flags[key] = _hydra_value(paths[key])
        elif value.strip("'\"").startswith("/"):
            raise PinError(f"documented flag {key}={value}: a path the rehearsal has no stand-in for")
    flags.update(SIZES)
    tiny_clip = _hydra_value(str(models.clip_config))  # the architecture is a size: the tiny config, by path
    flags["filter.model"] = tiny_clip
    if vlm == "openflamingo":
        flags["vlm.clip_model"] = tiny_clip
    return [w for k, v in flags.items() for w in ("-S", f"{k}={v}")]
