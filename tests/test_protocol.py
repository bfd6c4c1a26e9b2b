"""The authors' evaluation and training protocol (issue 20, items 3-9), each behind a param whose
default is the paper's / the authors' choice."""
from __future__ import annotations

import json

import pytest
from test_eval_datasets import cfg, coco_json, jpeg, refcoco, voc

from pin.eval.datasets import load_queries


# --- 3. the <= 3 objects rule counts every annotation ---------------------------------------

def _crowded_coco(tmp_path):
    """coco_json's images plus image 5: three objects and a crowd region (four annotations)."""
    data = coco_json(tmp_path / "ann.json", tmp_path / "img")
    data["images"].append({"id": 5, "file_name": "000000000005.jpg", "width": 40, "height": 30})
    data["annotations"] += [{"id": 50 + k, "image_id": 5, "category_id": 2, "bbox": [k, k, 9, 9], "iscrowd": 0}
                            for k in range(3)]
    data["annotations"].append({"id": 59, "image_id": 5, "category_id": 2, "bbox": [0, 0, 40, 30], "iscrowd": 1})
    (tmp_path / "ann.json").write_text(json.dumps(data))
    (tmp_path / "img" / "000000000005.jpg").write_bytes((tmp_path / "img" / "000000000001.jpg").read_bytes())
    return {"annotations": str(tmp_path / "ann.json"), "images": str(tmp_path / "img")}


def test_the_count_rule_counts_crowd_and_difficult_annotations(tmp_path):
    paths = _crowded_coco(tmp_path)
    qs, stats = load_queries("coco", cfg(coco=paths))
    # image 5 has four annotations: left out; image 1 (object + crowd) is in, its crowd region no query
    assert sorted({q.image_id for q in qs}) == [1, 3] and 11 not in {q.ann_id for q in qs}
    assert stats["n_images_selected"] == 2 and stats["n_images_too_many"] == 2
    qs, stats = load_queries("coco", cfg(coco=paths, _extra={"count": "queries"}))  # today's rule, an option
    assert sorted({q.image_id for q in qs}) == [1, 3, 5] and 59 not in {q.ann_id for q in qs}

    voc(tmp_path / "VOC2007", {"000001": [("dog", 0, (1, 1, 20, 20))] * 3 + [("dog", 1, (2, 2, 9, 9))],
                               "000002": [("cat", 0, (1, 1, 20, 20)), ("cat", 1, (2, 2, 9, 9))]})
    qs, stats = load_queries("pvoc", cfg(pvoc={"root": str(tmp_path / "VOC2007")}))
    assert [q.image_id for q in qs] == ["000002"] and stats["n_difficult_skipped"] == 2


# --- 7. RefCOCO: one query per ref, its last sentence ----------------------------------------

def test_refcoco_asks_each_ref_once_with_its_last_sentence_by_default(tmp_path):
    paths = refcoco(tmp_path)
    qs, stats = load_queries("refcoco", cfg(refcoco=paths))
    assert sorted(q.text for q in qs) == ["guy in red", "table top"] and stats["n_refs"] == 2
    qs, _ = load_queries("refcoco", cfg(refcoco={**paths, "sentences": "all"}))
    assert len(qs) == 3


# --- 5. query names without LVIS disambiguators (paper profile) ------------------------------

DISAMBIGUATED = {"bus_(vehicle)": "train", "bow_(weapon)": "train", "cup": "heldout", "bat_(animal)": "heldout"}


@pytest.fixture(scope="module")
def objects(tmp_path_factory):
    import numpy as np

    from pin.synth.filter import write_manifest, write_object_fixture

    root = tmp_path_factory.mktemp("objects")
    df = write_object_fixture(root / "objects", DISAMBIGUATED, per_category=3, canvas=32, seed=1)
    df["kept"], df["reason"], df["clip_score"] = True, "", np.nan
    write_manifest(df, root / "filtered" / "manifest.parquet")
    return root / "objects", root / "filtered" / "manifest.parquet"


def _compose(objects, out, **kw):
    from pin.params import ComposeParams
    from pin.synth import shards as sh
    from pin.synth.compose import run_compose

    p = ComposeParams(**{"image_size": 64, "grid": 8, "n_train": 12, "n_val": 0, "n_heldout": 6, "n_pretrain": 0,
                         "shard_size": 12, "workers": 1, "referrals": True, "same_type_prob": 1.0, **kw})
    run_compose(p, objects[0], objects[1], out, None, progress=False)
    refs = [o["referral"] for rec in sh.iter_records(out / "train") for o in rec["objects"]]
    names = [c["name"] for c in json.loads((out / "heldout" / "annotations.json").read_text())["categories"]]
    return refs, names


def test_clean_query_names_reach_training_prompts_and_queries(objects, tmp_path):
    refs, names = _compose(objects, tmp_path / "clean", query_names="clean")
    assert refs and not any("(" in r for r in refs) and any(r.endswith("bus") for r in refs)
    assert sorted(names) == ["bat", "cup"]
    refs, names = _compose(objects, tmp_path / "readable")  # the offline default: the mini VLM's words
    assert any("bus (vehicle)" in r for r in refs) and "bat (animal)" in names

    from pin.categories import set_query_names

    lvis = {"images": [{"id": 7, "file_name": "7.jpg", "width": 40, "height": 30}],
            "annotations": [{"id": 1, "image_id": 7, "category_id": 1, "bbox": [1, 1, 5, 5]}],
            "categories": [{"id": 1, "name": "bus_(vehicle)", "synonyms": ["bus_(vehicle)", "autobus"]}]}
    (tmp_path / "lvis.json").write_text(json.dumps(lvis))
    jpeg(tmp_path / "coco" / "7.jpg")
    paths = {"annotations": str(tmp_path / "lvis.json"), "images": str(tmp_path / "coco")}
    try:
        set_query_names("clean")  # what the evaluate stage does with compose.query_names: clean
        assert [q.text for q in load_queries("lvis", cfg(lvis=paths))[0]] == ["bus"]
    finally:
        set_query_names("readable")
    assert [q.text for q in load_queries("lvis", cfg(lvis=paths))[0]] == ["bus (vehicle)"]


# --- 6. referral phrasing of App. D -----------------------------------------------------------

def test_referrals_say_left_dog_and_dog_on_the_left_and_middle(objects, tmp_path):
    import numpy as np

    from pin.synth.layout import referrals

    row = [[0, 0, 10, 10], [20, 0, 30, 10], [40, 0, 50, 10]]  # three dogs left to right
    seen = {tuple(referrals(["dog"] * 3, row, style="appendix_d", rng=np.random.default_rng(s))) for s in range(40)}
    words = {r for refs in seen for r in refs}
    assert words == {"left dog", "dog on the left", "middle dog", "dog in the middle", "right dog", "dog on the right"}
    assert referrals(["dog"] * 3, row) == ["left dog", "dog", "right dog"]  # the prefix style, an option
    same = [[0, 0, 10, 10], [0, 0, 10, 10]]
    assert referrals(["dog"] * 2, same, style="appendix_d", rng=np.random.default_rng(0)) == ["dog", "dog"]

    refs, _ = _compose(objects, tmp_path / "c")
    assert any(" on the " in r for r in refs) and any(r.split()[0] in ("left", "right", "top", "bottom") for r in refs)
    prefix, _ = _compose(objects, tmp_path / "p", referral_style="prefix")
    assert not any(" on the " in r or " in the middle" in r for r in prefix)


# --- 8. beam search (eval.num_beams) ----------------------------------------------------------

class _Past:
    """A stand-in KV cache: it only records how the beams were reordered."""

    def __init__(self):
        self.reorders = []

    def reorder_cache(self, idx):
        self.reorders.append(idx.tolist())


def _markov_step(table):
    """An LM whose next-token distribution depends on the last token only (log-probs ``table``)."""
    import torch
    from types import SimpleNamespace

    past = _Past()

    def step(ids, mask, positions, _past, use_cache):
        logits = table[ids[:, -1]][:, None]
        return SimpleNamespace(logits=logits, past_key_values=past if use_cache else None)

    return step, past


def test_beam_search_finds_the_better_answer_greedy_misses():
    import torch

    from pin.vlm.greedy import beam_decode, greedy_decode

    # tokens: 0 pad, 1 stop, 2 "A", 3 "B", 4 start. A is likelier first (0.6), but after A nothing
    # is likely; B then stop has 0.4 * 0.99 > 0.6 * max after A.
    p = torch.full((5, 5), 1e-6)
    p[4, 2], p[4, 3] = 0.6, 0.4
    p[2, 1], p[2, 2], p[2, 3] = 0.34, 0.33, 0.33
    p[3, 1] = 0.99
    table = p.log()
    ids = torch.tensor([[4], [4]])
    mask, pos = torch.ones_like(ids), torch.zeros_like(ids)
    step, _ = _markov_step(table)
    greedy = greedy_decode(step, ids, mask, pos, 4, False, [1], 0)
    assert greedy[0].tolist()[:2] == [2, 1]  # "A", stop
    for use_cache in (False, True):
        step, past = _markov_step(table)
        beams = beam_decode(step, ids.repeat_interleave(3, 0), mask.repeat_interleave(3, 0),
                            pos.repeat_interleave(3, 0), 4, use_cache, [1], 0, num_beams=3)
        assert beams[:, :2].tolist() == [[3, 1], [3, 1]]  # "B", stop: the likelier answer
        assert not beams[:, 2:].any()  # padding after the stop
        assert bool(past.reorders) == use_cache
        assert all(i // 3 == j // 3 for r in past.reorders for j, i in enumerate(r))  # beams stay with their prompt
    step, _ = _markov_step(table)
    one = beam_decode(step, ids, mask, pos, 4, False, [1], 0, num_beams=1)
    assert one.tolist() == greedy.tolist()  # one beam is greedy


def test_openflamingo_beam_search_cached_matches_uncached_and_single():
    import torch
    from test_methods import fresh_vlm

    torch.manual_seed(0)
    vlm = fresh_vlm()
    vlm.flamingo.to(torch.float64)  # no near-tie can flip a ranking between the two paths
    prompts = [vlm.prompt(o) for o in ("dog", "cup dog", "cup")]
    feats = torch.randn(3, vlm.site.n_positions, vlm.site.width, dtype=torch.float64)
    cached = vlm.generate(feats, prompts, max_new_tokens=8, num_beams=3)
    uncached = vlm.generate(feats, prompts, max_new_tokens=8, num_beams=3, use_cache=False)
    single = [vlm.generate(feats[i:i + 1], [p], max_new_tokens=8, num_beams=3)[0] for i, p in enumerate(prompts)]
    assert cached == uncached == single and all(isinstance(t, str) for t in cached)
    assert vlm.generate(feats, prompts, max_new_tokens=8, num_beams=1) == vlm.generate(feats, prompts, max_new_tokens=8)


# --- 9. box labels: pasted | visible ----------------------------------------------------------

def test_visible_box_labels_are_what_later_pastes_leave(objects, tmp_path):
    from pin.synth import shards as sh
    from pin.synth.layout import visible_extent

    # the second box covers the first one's left half; the third lies inside the second
    assert visible_extent([(0, 0, 4, 2), (0, 0, 2, 4), (1, 1, 2, 2)]) == [(2, 0, 4, 2), (0, 0, 2, 4), (1, 1, 2, 2)]
    assert visible_extent([(2, 2, 4, 4), (0, 0, 8, 8)]) == [(2, 2, 4, 4), (0, 0, 8, 8)]  # hidden: kept

    kw = {"referrals": False, "n_train": 40, "shard_size": 40, "o_max": 0.5}
    _compose(objects, tmp_path / "pasted", **kw)
    _compose(objects, tmp_path / "visible", box="visible", **kw)
    pasted = list(sh.iter_records(tmp_path / "pasted" / "train"))
    visible = list(sh.iter_records(tmp_path / "visible" / "train"))
    assert [r["image"] for r in pasted] == [r["image"] for r in visible]  # same pictures, other labels
    shrunk = 0
    for a, b in zip(pasted, visible):
        for oa, ob in zip(a["objects"], b["objects"]):
            pa, vb = list(oa["grid_box"]), list(ob["grid_box"])
            assert pa[0] <= vb[0] < vb[2] <= pa[2] and pa[1] <= vb[1] < vb[3] <= pa[3]
            shrunk += pa != vb
    assert shrunk > 0
