"""Category sets (LVIS v1, COCO, PASCAL VOC) and the train / held-out split.

The names live in ``pin/data/*.csv`` (see ``pin/data/SOURCES.md`` for where they come from and
``scripts/build_category_files.py`` for how they were built). The paper trains on synthetic
objects of LVIS categories and holds out every category that also occurs in COCO or PASCAL VOC
for a zero-shot evaluation; :func:`heldout_names` computes that set by synonym-aware matching.

Names in prompts and queries: ONE rule for every stage. :func:`query_name` is what a prompt, a
referral, a COCO export and an evaluation query say for a category: :func:`readable` (the dataset
name as words, VOC's run-together names split; the offline mini VLM's vocabulary) or, with
``compose.query_names: clean`` (the paper profile, as the authors), :func:`clean_name` (without
LVIS's disambiguator: ``bus_(vehicle)`` -> ``bus``). The compose stage passes the choice down; the
evaluate stage sets it for its process (:func:`set_query_names`).
"""
# Public API for the other stages (pretraining, evaluation, COCO export):
#   query_name(name: str) -> str   the text a prompt/query uses for a category name of any set
#   readable(name: str) -> str     the words of a name (also for synonym matching)
#   clean_name(name: str) -> str   readable() without a "(...)" disambiguator (compose.query_names: clean)
from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal

from pin.errors import PinError

SetName = Literal["lvis", "coco", "pvoc"]
Split = Literal["train", "heldout"]

SET_FILES: dict[str, str] = {"lvis": "lvis_v1.csv", "coco": "coco.csv", "pvoc": "pvoc.csv"}
SYNONYM_SEP = "|"


@dataclass(frozen=True)
class Category:
    """One category of a dataset.

    ``name`` is the dataset's own spelling (LVIS ``bat_(animal)``, COCO ``dining table``, VOC
    ``diningtable``); ``synonyms`` are plain-word alternatives (no underscores), the readable name
    first; ``id`` is the dataset's category id (LVIS and COCO annotation ids, VOC 1..20 in the
    standard order); ``dataset`` says which set it belongs to.
    """

    name: str
    synonyms: tuple[str, ...]
    id: int
    dataset: str = "lvis"

    @property
    def readable(self) -> str:
        return readable(self.name)

    @property
    def slug(self) -> str:
        return slug(self.name)


# VOC writes three class names as one word and uses the British "aeroplane", which captions (and
# COCO, and LVIS) spell "airplane"; LVIS has one name with a stray second part. "motorbike" and
# "sofa" are words captions use, so they stay. pvoc.csv lists each readable name first.
_READABLE = {
    "diningtable": "dining table",
    "tvmonitor": "tv monitor",
    "pottedplant": "potted plant",
    "aeroplane": "airplane",
    "monitor_(computer_equipment) computer_monitor": "computer monitor",
}
# Off by default: clean names are words the offline mini VLM's vocabulary does not have.
CLEAN_QUERY_NAMES = False
_DISAMBIGUATOR = re.compile(r"\s*\([^)]*\)")


def readable(name: str) -> str:
    """A name as words: ``diningtable`` -> ``dining table``, ``bat_(animal)`` -> ``bat (animal)``,
    ``aeroplane`` -> ``airplane``. Underscores, control characters and runs of whitespace become
    one space (annotation files from elsewhere may hold any text)."""
    if name in _READABLE:
        return _READABLE[name]
    text = "".join(" " if unicodedata.category(ch) in ("Cc", "Cs") else ch for ch in name.replace("_", " "))
    return " ".join(text.split())


def clean_name(name: str) -> str:
    """:func:`readable` without LVIS's disambiguator, as a caption would say it: ``bus_(vehicle)``
    -> ``bus``, ``football_(American)`` -> ``football``. Not unique (``bow_(weapon)`` and
    ``bow_(decorative_ribbons)`` are both ``bow``): bookkeeping keeps the LVIS name and id."""
    words = readable(name)
    return " ".join(_DISAMBIGUATOR.sub(" ", words).split()) or words


def query_name(name: str, clean: bool | None = None) -> str:
    """What prompts, referrals, exports and evaluation queries call a category (one rule for all):
    ``clean`` (the paper-profile VLMs: ``compose.query_names: clean``, as the authors strip " (")
    or readable; None: this process's choice (:func:`set_query_names`, else ``CLEAN_QUERY_NAMES``)."""
    return clean_name(name) if (CLEAN_QUERY_NAMES if clean is None else clean) else readable(name)


def set_query_names(style: Literal["readable", "clean"]) -> None:
    """The rule for this process (the evaluate stage sets it from ``compose.query_names``, so the
    queries say what the training prompts said)."""
    global CLEAN_QUERY_NAMES
    CLEAN_QUERY_NAMES = style == "clean"


def slug(name: str) -> str:
    """A file-system-safe folder name: ``bat_(animal)`` -> ``bat_animal``, ``bow-tie`` -> ``bow-tie``."""
    s = re.sub(r"[^a-z0-9-]+", "_", name.lower()).strip("_")
    return s or "category"


def _singular(word: str) -> str:
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if word.endswith(("sses", "ches", "shes", "xes")):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us")):
        return word[:-1]
    return word


def normalize(text: str) -> str:
    """Lower case, ``_``/``-``/brackets as spaces, last word singular: ``Tennis_Rackets`` ->
    ``tennis racket``, ``bat_(animal)`` -> ``bat animal``."""
    t = text.lower().replace("_", " ").replace("-", " ")
    t = re.sub(r"[()\[\],.'\u2019:]", " ", t)
    words = t.split()
    if words:
        words[-1] = _singular(words[-1])
    return " ".join(words)


def match_key(text: str) -> str:
    """:func:`normalize` without spaces, so ``wine glass`` == ``wineglass`` == ``Wine-Glasses``."""
    return normalize(text).replace(" ", "")


def _data_text(filename: str) -> str:
    return resources.files("pin").joinpath("data", filename).read_text(encoding="utf-8")


@lru_cache(maxsize=None)
def _load(set_name: str) -> tuple[Category, ...]:
    if set_name not in SET_FILES:
        raise PinError(f"unknown category set {set_name!r}; choose one of {sorted(SET_FILES)}")
    rows = csv.DictReader(_data_text(SET_FILES[set_name]).splitlines())
    cats = []
    for row in rows:
        syns = tuple(s for s in row["synonyms"].split(SYNONYM_SEP) if s)
        cats.append(Category(name=row["name"], synonyms=syns, id=int(row["id"]), dataset=set_name))
    return tuple(cats)


def load_set(set_name: SetName) -> list[Category]:
    """All categories of ``"lvis"`` (1,203), ``"coco"`` (80) or ``"pvoc"`` (20), in id order."""
    return list(_load(set_name))


def _keys(cat: Category) -> set[str]:
    return {match_key(s) for s in (cat.name, readable(cat.name), *cat.synonyms)}


@lru_cache(maxsize=1)
def _heldout() -> frozenset[str]:
    probe: set[str] = set()
    for set_name in ("coco", "pvoc"):
        for cat in _load(set_name):
            probe |= _keys(cat)
    return frozenset(c.name for c in _load("lvis") if _keys(c) & probe)


def heldout_names() -> set[str]:
    """LVIS names (canonical spelling) of the categories that match a COCO or PASCAL VOC class
    by any synonym (normalised, plural-insensitive; the COCO/VOC files list aliases such as
    ``sofa``/``couch`` and ``tvmonitor``/``television set``). These are never trained on."""
    return set(_heldout())


def split_of(category: Category | str) -> Split:
    """``"heldout"`` for LVIS categories matching COCO/VOC and for every COCO/VOC category,
    ``"train"`` for the other LVIS categories."""
    if isinstance(category, Category):
        if category.dataset in ("coco", "pvoc"):
            return "heldout"
        return "heldout" if category.name in _heldout() else "train"
    if category in _heldout():
        return "heldout"
    if any(category == c.name for c in _load("lvis")):
        return "train"
    for set_name in ("coco", "pvoc"):
        if any(category == c.name for c in _load(set_name)):
            return "heldout"
    raise PinError(f"unknown category {category!r}: not an LVIS, COCO or VOC name")
