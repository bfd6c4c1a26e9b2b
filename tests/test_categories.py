import csv
from importlib import resources

import pytest

from pin import categories
from pin.categories import (Category, clean_name, heldout_names, load_set, match_key, normalize,
                            query_name, readable, slug, split_of)
from pin.errors import PinError
from pin.synth.emoji import load_emoji_map


def test_counts_and_ids():
    lvis, coco, pvoc = load_set("lvis"), load_set("coco"), load_set("pvoc")
    assert (len(lvis), len(coco), len(pvoc)) == (1203, 80, 20)
    assert [c.id for c in lvis] == list(range(1, 1204))
    assert coco[0] == Category("person", ("person",), 1, "coco")
    assert max(c.id for c in coco) == 90 and len({c.id for c in coco}) == 80
    assert [c.id for c in pvoc] == list(range(1, 21))
    for cats in (lvis, coco, pvoc):
        assert len({c.name for c in cats}) == len(cats)
        assert len({c.slug for c in cats}) == len(cats)  # one folder per category
        assert all(c.synonyms and c.synonyms[0] == readable(c.name) for c in cats)


def test_lvis_canonical_names_and_synonyms():
    by_name = {c.name: c for c in load_set("lvis")}
    assert by_name["aerosol_can"].synonyms == ("aerosol can", "spray can")
    assert {"bow_(weapon)", "bow_(decorative_ribbons)", "horned_cow", "Band_Aid"} <= set(by_name)
    assert "bull" not in by_name  # v0.5 name
    assert "couch" in by_name["sofa"].synonyms
    assert "donut" in by_name["doughnut"].synonyms


def test_readable_and_normalize():
    assert readable("diningtable") == "dining table"
    assert readable("tvmonitor") == "tv monitor"
    assert readable("pottedplant") == "potted plant"
    assert readable("motorbike") == "motorbike"
    assert readable("aeroplane") == "airplane"  # as captions, COCO and LVIS spell it
    assert readable("bat_(animal)") == "bat (animal)"
    assert readable("traffic_light") == "traffic light"
    assert normalize("Tennis_Rackets") == "tennis racket"
    assert normalize("bat_(animal)") == "bat animal"
    assert match_key("wine glass") == match_key("wineglass") == match_key("Wine-Glasses")
    assert match_key("skis") == match_key("ski")
    assert match_key("bus") == "bus" and match_key("glass") == "glass"
    assert slug("bat_(animal)") == "bat_animal"


def test_heldout_set():
    held = heldout_names()
    expected = {"dog", "airplane", "dining_table", "television_set", "sofa", "motorcycle",
                "person", "cat", "train_(railroad_vehicle)", "bus_(vehicle)", "car_(automobile)",
                "cellular_telephone", "mouse_(computer_equipment)", "doughnut", "wineglass",
                "fireplug", "ski", "necktie", "flowerpot", "laptop_computer", "remote_control",
                "monitor_(computer_equipment) computer_monitor", "orange_(fruit)", "hair_dryer"}
    assert expected <= held
    # COCO classes have one LVIS twin (hot dog has none); VOC adds the computer monitor
    assert 78 <= len(held) <= 82
    assert not {"bulldog", "puppy", "pickup_truck", "armchair", "table", "alarm_clock",
                "wall_clock", "teacup", "baseball_cap"} & held


def test_synonym_aware_matching():
    held = heldout_names()
    # matched only through a synonym / alias, never through the canonical name
    assert "fireplug" in held  # COCO "fire hydrant" = LVIS "fireplug/fire hydrant"
    assert "sofa" in held  # COCO "couch", VOC "sofa"
    assert "television_set" in held  # VOC "tvmonitor", COCO "tv"
    assert "bat_(animal)" not in held and "baseball_bat" in held


def test_split_of():
    lvis = load_set("lvis")
    train = [c for c in lvis if split_of(c) == "train"]
    held = heldout_names()
    assert len(train) == 1203 - len(held)
    assert not {c.name for c in train} & held
    coco_keys = {match_key(s) for c in load_set("coco") + load_set("pvoc") for s in (c.name, *c.synonyms)}
    for c in train:  # no training category answers to a COCO / VOC name
        assert not {match_key(s) for s in (c.name, *c.synonyms)} & coco_keys, c
    assert all(split_of(c) == "heldout" for c in load_set("coco") + load_set("pvoc"))
    assert split_of("dog") == "heldout" and split_of("alarm_clock") == "train"
    assert split_of("tvmonitor") == "heldout"
    with pytest.raises(PinError):
        split_of("no such thing")
    with pytest.raises(PinError):
        load_set("imagenet")


def test_emoji_map_is_consistent():
    text = resources.files("pin").joinpath("data", "emoji_map.csv").read_text(encoding="utf-8")
    rows = list(csv.DictReader(text.splitlines()))
    names = {s: {c.name for c in load_set(s)} for s in ("lvis", "coco", "pvoc")}
    seen = set()
    for r in rows:
        assert r["category"] in names[r["dataset"]], r
        assert r["match"] in ("exact", "manual")
        key = (r["dataset"], r["hexcode"])
        assert key not in seen, f"one emoji for two categories: {r}"
        seen.add(key)
    lvis = load_emoji_map("lvis")
    assert len(lvis) >= 250 and len(load_emoji_map("coco")) >= 55 and len(load_emoji_map("pvoc")) >= 17
    assert lvis["dog"].hexcode == "1F415" and lvis["dog"].annotation == "dog"
    assert lvis["mouse_(computer_equipment)"].annotation == "computer mouse"
    assert "glass_(drink_container)" not in lvis or lvis["glass_(drink_container)"].annotation != "glasses"
    held = heldout_names()
    assert sum(n in held for n in lvis) >= 50 and sum(n not in held for n in lvis) >= 250


def test_one_name_rule_for_every_set():
    """Pretraining, referrals, the COCO export and evaluation queries all say query_name(name)."""
    voc = {c.name: query_name(c.name) for c in load_set("pvoc")}
    assert voc["diningtable"] == "dining table" and voc["tvmonitor"] == "tv monitor"
    assert voc["pottedplant"] == "potted plant" and voc["aeroplane"] == "airplane"
    assert voc["motorbike"] == "motorbike" and voc["sofa"] == "sofa"
    assert all(query_name(c.name) == c.name for c in load_set("coco"))  # COCO names are words already
    assert readable("a\x00b__c\t d") == "a b c d"  # control characters and runs of blanks: one space


def test_default_query_names_keep_the_lvis_disambiguator():
    """The shipped mini VLM's vocabulary holds "bus (vehicle)": clean names wait for a retrained asset."""
    assert categories.CLEAN_QUERY_NAMES is False
    assert query_name("bus_(vehicle)") == "bus (vehicle)" and query_name("ram_(animal)") == "ram (animal)"
    assert all(query_name(c.name) == readable(c.name) for c in load_set("lvis"))


def test_clean_names():
    assert clean_name("bus_(vehicle)") == "bus" and clean_name("ram_(animal)") == "ram"
    assert clean_name("football_(American)") == "football" and clean_name("traffic_light") == "traffic light"
    assert clean_name("monitor_(computer_equipment) computer_monitor") == "computer monitor"
    assert clean_name("diningtable") == "dining table"
    names = [clean_name(c.name) for c in load_set("lvis")]
    assert all(n and "(" not in n and ")" not in n and n == n.strip() for n in names)
    # not unique across all of LVIS (the LVIS id keeps them apart), but unique among the
    # categories the offline default can make
    assert clean_name("bow_(weapon)") == clean_name("bow_(decorative_ribbons)") == "bow"
    emoji = [clean_name(n) for n in load_emoji_map("lvis")]
    assert len(set(emoji)) == len(emoji)
