import pytest
import yaml

from pin import params
from pin.params import ParamsError


def test_committed_params_validate():
    raw = params.load_yaml("params.yaml")
    for section, cls in params.SECTIONS.items():
        params.parse_section(section, raw.get(section), cls)


def test_unknown_key_named():
    with pytest.raises(ParamsError, match=r"compose\.o_maxx: unknown key"):
        params.parse_section("compose", {"o_maxx": 0.3})


def test_wrong_type_named():
    with pytest.raises(ParamsError, match=r"compose\.o_max"):
        params.parse_section("compose", {"o_max": "lots"})


@pytest.mark.parametrize(
    "bad, key",
    [
        ({"o_max": 1.5}, "o_max"),
        ({"a_max": 0}, "a_max"),
        ({"grid": 15}, "grid"),
        ({"s_min": [0.5, 0.2, 0.1], "s_max": [0.4, 1, 1]}, "s_min"),
    ],
)
def test_out_of_range_rejected(bad, key):
    with pytest.raises(ParamsError, match=key):
        params.parse_section("compose", bad)


def test_load_reads_file(tmp_path):
    p = tmp_path / "params.yaml"
    p.write_text(yaml.safe_dump({"compose": {"o_max": 0.3}}))
    assert params.load("compose", p).o_max == 0.3
    p.write_text("compose: [1, 2")
    with pytest.raises(ParamsError, match="not valid YAML"):
        params.load("compose", p)
    with pytest.raises(ParamsError, match="not found"):
        params.load("compose", tmp_path / "nope.yaml")


def _differences(code: params.Section, committed: dict, where: str) -> list[str]:
    """Dotted keys whose code default is not the committed value, or that params.yaml leaves out."""
    out = []
    for key in type(code).model_fields:
        value, at = getattr(code, key), f"{where}.{key}"
        if key not in committed:
            out.append(f"{at}: not in params.yaml (its value would live in the code)")
        elif isinstance(value, params.Section):
            out += _differences(value, committed[key] or {}, at)
        elif value != committed[key]:
            out.append(f"{at}: code default {value!r}, params.yaml {committed[key]!r}")
    return out


def test_code_defaults_are_the_committed_params():
    # params.yaml is the one place the pipeline's values live: a library call that leaves a field
    # out (TrainParams(steps=5)) gets what `dvc repro` runs, not another experiment.
    raw = params.load_yaml("params.yaml")
    diffs = []
    for section, cls in params.SECTIONS.items():
        diffs += _differences(cls(), raw[section], section)
    assert raw.get("method") == "pin" == params.parse_method({}, ["pin"])
    assert raw.get("threads") == params.parse_threads({}) == params.parse_threads(raw)
    assert not diffs, "code defaults that differ from params.yaml:\n" + "\n".join(diffs)


def test_the_difference_check_sees_a_changed_default():
    raw = params.load_yaml("params.yaml")
    changed = {**raw["train"], "steps": raw["train"]["steps"] + 1}
    assert _differences(params.TrainParams(), changed, "train") == [
        f"train.steps: code default {raw['train']['steps']}, params.yaml {raw['train']['steps'] + 1}"]
    nested = {**raw["eval"], "paths": {**raw["eval"]["paths"], "synthetic": {"annotations": "x", "images": None}}}
    assert len(_differences(params.EvalParams(), nested, "eval")) == 2


def test_text_kinds_are_checked_where_they_are_defined():
    # params checks the weights; pin.vlm.pretrain_text, which writes the texts, checks the kinds
    from pin.errors import PinError
    from pin.vlm.pretrain import text_recipe

    p = params.parse_section("pretrain", {"text_mix": {"gossip": 1.0}})
    with pytest.raises(PinError, match=r"pretrain\.text_mix: unknown text kinds \['gossip'\]"):
        text_recipe(p)
    with pytest.raises(ParamsError, match=r"pretrain\.text_mix: weights"):
        params.parse_section("pretrain", {"text_mix": {"caption": -1.0}})
