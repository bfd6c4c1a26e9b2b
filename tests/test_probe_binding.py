"""research/probe_binding.py: which object's level an answer's corner reads."""
import importlib.util
from pathlib import Path
from types import SimpleNamespace

from hypothesis import given, settings, strategies as st

spec = importlib.util.spec_from_file_location("probe_binding", Path(__file__).parents[1] / "research" / "probe_binding.py")
probe = importlib.util.module_from_spec(spec)
spec.loader.exec_module(probe)

levels = st.integers(0, 7)


@settings(max_examples=200, deadline=None)
@given(named=levels, others=st.lists(levels, max_size=4), answer=levels)
def test_a_corner_reads_the_named_object_only_when_no_other_shares_its_level(named, others, answer):
    kind = probe.classify(28.0 * answer, named, others, 28)
    if named in others:
        assert kind is None  # undecidable: the answer cannot tell them apart
    elif answer == named:
        assert kind == "named"
    elif answer in others:
        assert kind == "other"
    else:
        assert kind in ("mean", "none")


def test_no_box_and_the_mean_level():
    assert probe.classify(None, 2, [5], 28) == "none"
    assert probe.classify(28.0 * 4, 2, [6], 28) == "mean"  # (2 + 6) / 2
    assert probe.classify(28.0 * 3, 2, [6], 28) == "none"


def test_queries_skip_names_that_repeat_in_an_image():
    def obj(cat, a, s):
        return SimpleNamespace(category=cat, box=(0, 0, 56, 56), appearance=(a, s))

    images = [SimpleNamespace(width=224, height=224, objects=[obj("dog", 1, 2), obj("dog", 3, 4), obj("cat", 5, 6)]),
              SimpleNamespace(width=224, height=224, objects=[obj("cup", 0, 1)])]
    qs = probe.queries(images)
    assert [(i, name, lv) for i, name, lv, _ in qs] == [(0, "cat", (5, 6)), (1, "cup", (0, 1))]
    assert qs[0][3] == [(1, 2), (3, 4)] and qs[1][3] == []


def test_name_pairs_compare_answers_with_truths_within_an_image():
    answered = {0: [((28.0, 0.0), (1, 0)), ((28.0, 0.0), (2, 0)), (None, (2, 0))],
                1: [((56.0, 28.0), (2, 1)), ((0.0, 28.0), (0, 1))]}
    assert probe.name_pairs(answered, 28) == {"pairs": 4, "same_answer": 0.25, "same_truth": 0.25}
