"""The paper profile rehearsed end to end (rehearsal/, scripts/rehearse_paper.py): tiny
random-weight stand-ins in the real on-disk formats, ``dvc exp run -S profile=<vlm>`` with the
committed profile and the documented paths (only paths and sizes changed), for OpenFlamingo and
BLIP-2, each also at Tab. 3's higher resolution.

The fast tests check the documented flags and the profiles against params.py and the stand-in
data sets against the evaluation loaders; the slow one runs the whole thing."""
from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest
import yaml

from pin import params
from rehearsal import flags as doc_flags
from rehearsal import run

ROOT = Path(__file__).resolve().parents[1]


def _apply(flags: dict[str, str]) -> dict:
    """params.yaml with ``-S key=value`` overrides applied, each parsed by Hydra's override
    grammar as ``dvc exp run -S`` parses it (an unquoted ``(`` is a syntax error there)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parser = OverridesParser.create()
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, text in flags.items():
        value = parser.parse_override(f"{key}={text}").value()
        *parents, last = key.split(".")
        node = raw
        for part in parents:
            assert isinstance(node.get(part), dict), f"documented flag {key}: no section {part!r} in params.yaml"
            node = node[part]
        assert last in node, f"documented flag {key}: params.yaml has no key {last!r}"
        node[last] = value
    return raw


def _standins(tmp_path):
    """Where the stand-ins would be (nothing written): for the flags only."""
    from rehearsal.datasets import DataSets
    from rehearsal.standins import StandIns

    models = StandIns(*(tmp_path / n for n in ("sd", "clip.json", "clip.bin", "of/checkpoint.pt", "lm", "b2")))
    return models, DataSets(**{f: tmp_path / f for f in DataSets.__dataclass_fields__})


def test_documented_paths_with_each_profile_are_valid_params(tmp_path):
    """docs/profiles.md's DATA and WEIGHTS (what a user sets) over params.yaml, with each committed
    profile laid over them as the stages load it: every section validates, and the docs hold
    paths, hub ids and the data-set list only (protocol values live in the profile files)."""
    from pin.profiles import profile_values

    docs = doc_flags.documented_flags(ROOT)
    path_keys = set(doc_flags.path_values(*_standins(tmp_path))) | {"eval.datasets"}
    assert set(docs) <= path_keys, set(docs) - path_keys
    assert docs["eval.paths.refcoco.refs"] == "'/data/refcoco/refs(unc).p'"  # Hydra-quoted in the docs
    shutil.copytree(ROOT / "profiles", tmp_path / "profiles")
    for vlm in ("openflamingo", "blip2"):
        raw = _apply({**docs, "profile": vlm})
        (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
        merged = params.load_yaml(tmp_path / "params.yaml")
        for section in ("generate", "filter", "compose", "vlm", "train", "eval"):
            params.parse_section(section, merged[section])  # raises naming the key
        assert merged["vlm"]["name"] == vlm and merged["eval"]["paths"]["refcoco"]["refs"] == "/data/refcoco/refs(unc).p"
        assert not set(docs) & set(profile_values(ROOT / "profiles" / f"{vlm}.yaml"))
    paper = (ROOT / "docs" / "paper.md").read_text()
    for vlm, overrides in doc_flags.TABLE3.items():  # what the rehearsal runs as Tab. 3 is what the docs say
        assert " ".join(f"-S {k}={v}" for k, v in overrides.items()) in paper, vlm


def test_rehearsal_flags_are_the_profile_with_paths_and_sizes_swapped(tmp_path):
    models, data = _standins(tmp_path)
    docs = doc_flags.documented_flags(ROOT)
    for vlm, size in (("openflamingo", "64"), ("blip2", "56")):
        for table3 in (False, True):
            argv = doc_flags.rehearsal_flags(docs, vlm, models, data, ROOT, table3)
            flags = dict(w.split("=", 1) for w in argv[1::2])
            assert flags["profile"] == vlm and "vlm.name" not in flags
            assert flags[f"profiles/{vlm}.yaml:train.steps"] == "3" and "train.steps" not in flags  # the profile's size
            assert flags["train.batch_size"] == "8"  # a size the profile leaves to params.yaml
            assert flags["compose.backgrounds"] == str(tmp_path / "backgrounds")
            assert flags["vlm.image_size"] == (size if table3 else "null")  # the workspace keeps the last run's
            assert flags["compose.image_size"] == (size if table3 else "112")
    with pytest.raises(doc_flags.PinError, match="train.lr=0.1: not a path"):
        doc_flags.rehearsal_flags({**docs, "train.lr": "0.1"}, "blip2", models, data, ROOT)


def test_bash_array_parser():
    text = """x\nDATA=(-S a=1 -S 'b=[x,y]'\n   -S "c='/p/refs(unc).p'" -S d=e\\(f\\))\nOF=(-S vlm.name=of)"""
    assert doc_flags._array(text, "DATA") == ["-S", "a=1", "-S", "b=[x,y]", "-S", "c='/p/refs(unc).p'", "-S", "d=e(f)"]
    assert doc_flags._pairs(doc_flags._array(text, "OF"), "OF") == {"vlm.name": "of"}
    assert doc_flags._array(text, "B2") is None
    assert doc_flags._hydra_value("/d/refs(unc).p") == "'/d/refs(unc).p'" and doc_flags._hydra_value("/d/x.json") == "/d/x.json"


def test_clip_model_param_takes_a_config_path(tmp_path):
    """filter.model / vlm.clip_model name an unregistered open_clip architecture by its config
    file; the checkpoint file then loads into it (a wrong size would fail to load)."""
    import torch

    from pin.errors import PinError
    from rehearsal.standins import write_open_clip
    from pin.synth.clip_score import ClipScorer

    config, weights = write_open_clip(tmp_path / "clip")
    scorer = ClipScorer.from_pretrained(str(config), str(weights), device="cpu")
    saved = torch.load(weights, weights_only=True)
    assert all(torch.equal(v, saved[k]) for k, v in scorer.model.state_dict().items())
    with pytest.raises(PinError, match=r"filter.model='.*nothere.json': no such open_clip model-config file"):
        ClipScorer.from_pretrained(str(tmp_path / "nothere.json"), str(weights))
    bad = tmp_path / "bad-clip.json"
    bad.write_text('{"embed_dim": 8}')
    with pytest.raises(PinError, match="filter.model=.*not an open_clip model config"):
        ClipScorer.from_pretrained(str(bad), str(weights))


def test_pretrain_vlm_stage_is_a_no_op_for_pretrained_vlms(tmp_path):
    """With OpenFlamingo or BLIP-2 the stage reads no composed data (the paper flags make none:
    compose.n_pretrain=0) and leaves outputs that say it was not used."""
    from stage_runner import run_entry, write_params

    (tmp_path / "models" / "mini_vlm").mkdir(parents=True)
    (tmp_path / "models" / "mini_vlm" / "stale.bin").write_bytes(b"old")
    write_params(tmp_path, vlm={"name": "blip2"})
    code, err, _ = run_entry("pretrain_vlm", tmp_path)
    assert code == 0, err
    assert [p.name for p in (tmp_path / "models" / "mini_vlm").iterdir()] == ["NOT_USED.txt"]
    assert json.loads((tmp_path / "metrics" / "pretrain.json").read_text()) == {"source": "not used", "vlm": "blip2"}
    write_params(tmp_path)  # the mini VLM still needs its data
    code, err, _ = run_entry("pretrain_vlm", tmp_path)
    assert code != 0 and any("data/composed" in line for line in err), err


def test_standin_data_sets_load_as_the_real_ones(tmp_path):
    from pin.eval.datasets import load_queries
    from rehearsal.datasets import write_all

    d = write_all(tmp_path)
    cfg = params.EvalParams.model_validate({"paths": {
        "coco": {"annotations": str(d.coco_annotations), "images": str(d.coco_images)},
        "lvis": {"annotations": str(d.lvis_annotations), "images": str(d.coco_root)},
        "pvoc": {"root": str(d.voc_root)},
        "refcoco": {"refs": str(d.refcoco_refs), "annotations": str(d.refcoco_annotations),
                    "images": str(d.refcoco_images)}}})
    got = {name: load_queries(name, cfg) for name in ("coco", "lvis", "pvoc", "refcoco")}
    for name in ("coco", "lvis", "pvoc"):  # the 4-object picture is dropped by the count rule
        queries, stats = got[name]
        assert stats["n_images_too_many"] == 1 and len(queries) == 6, (name, stats)
    assert got["coco"][1]["n_crowd_skipped"] == 1 and got["pvoc"][1]["n_difficult_skipped"] == 1
    assert got["lvis"][1]["n_queries_r"] == 1  # frequency groups read
    queries, stats = got["refcoco"]
    assert {q.text for q in queries} >= {"the dog", "red car"} and stats["n_refs"] == len(queries)  # last sentence each
    assert sorted(p.name for p in d.backgrounds.iterdir())[0] == "h_00000.jpg"


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@pytest.mark.skipif(not (Path(sys.executable).parent / "dvc").exists(), reason="dvc is not installed")
def test_paper_profile_rehearsal(tmp_path):
    reports = run.rehearse(tmp_path, ROOT)
    for r in reports:
        print(f"{r.vlm}: {r.seconds:.0f}s ran {r.ran} reused {r.skipped} parse rates {r.parse_rates}")
    problems = [p for r in reports for p in r.problems]
    assert not problems, "\n".join(problems) + "\n" + reports[-1].output[-4000:]
    of, of448, b2, b2_364 = reports
    assert [r.vlm for r in reports] == ["openflamingo", "openflamingo@448", "blip2", "blip2@364"]
    evaluated = [f"evaluate@{d}" for d in doc_flags.DATASETS]
    assert of.ran == ["generate", "filter", "compose", "pretrain_vlm", "train", *evaluated, "figures"], of.ran
    # Tab. 3's runs reuse what does not depend on the image size (compose.image_size 112 -> Tab. 3's);
    # another profile is another params file to DVC: everything reruns (generate keeps its objects)
    for r in (of448, b2_364):
        assert r.skipped == ["generate", "filter"] and set(r.ran) == set(of.ran) - {"generate", "filter"}, r.vlm
    assert b2.ran == of.ran and not b2.skipped
    # at Tab. 3's resolution the insert covers the larger patch grid (its table S grows with it)
    assert of448.insert_params > of.insert_params and b2_364.insert_params > b2.insert_params
    for r in reports:
        assert set(r.parse_rates) == set(doc_flags.DATASETS) and all(0 <= v <= 1 for v in r.parse_rates.values())
        assert r.insert_params > 0
    repo = tmp_path / "repo"
    assert json.loads((repo / "metrics" / "pretrain.json").read_text())["source"] == "not used"
    assert json.loads((repo / "metrics" / "filter.json").read_text())["clip"].startswith("applied")
    assert not (tmp_path / "network.log").exists()
