"""The authors' evaluation and training protocol (issue 20, items 3-9), each behind a param whose
default is the paper's / the authors' choice."""
from __future__ import annotations

import json

from test_eval_datasets import cfg, coco_json, refcoco, voc

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
