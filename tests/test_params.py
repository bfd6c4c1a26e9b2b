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
