"""tarq.grid.results.find_system / system_datasets: reading one system of a published grid result back as
DatasetResults (what the pairing benchmarks build on), on a hand-made document."""
from __future__ import annotations

import pytest

from tarq.grid.results import find_system, system_datasets


def _doc():
    return {"format": "tarq-grid-results",
            "systems": [{"method": "f16", "policy": "greedy", "hyps": {"a": ["x y", None], "b": ["p"]}},
                        {"method": "qep", "policy": "greedy", "hyps": {"a": ["x", "z"]}},
                        {"method": "qep", "policy": "default", "hyps": {"a": ["x y", "z"], "b": ["q"]}}],
            "utterances": {"a": {"ids": ["a1", "a2"], "refs": ["x y", "z"]},
                           "b": {"ids": ["b1"]}}}                       # b: references redacted


def test_a_system_is_found_by_method_and_policy():
    assert find_system(_doc(), "f16", source="g.json")["hyps"]["b"] == ["p"]
    assert find_system(_doc(), "qep", "default", source="g.json")["policy"] == "default"


@pytest.mark.parametrize("method, policy, message", [
    ("qep", None, "2 systems with method 'qep'"), ("gptq", None, "0 systems"), ("qep", "beam", "policy 'beam'")])
def test_no_or_several_matches_are_one_line_errors_naming_the_file(method, policy, message):
    with pytest.raises(ValueError, match=message) as e:
        find_system(_doc(), method, policy, source="g.json")
    assert str(e.value).startswith("g.json: ") and "\n" not in str(e.value) and "qep:default" in str(e.value)


def test_a_method_run_at_several_types_is_told_apart_by_its_type():
    doc = _doc()
    doc["systems"] = [{"method": "ggml", "type": "q4_0", "policy": "greedy", "hyps": {"a": ["x", "z"]}},
                      {"method": "ggml", "type": "iq4_nl", "policy": "greedy", "hyps": {"a": ["x y", "z"]}}]
    assert find_system(doc, "ggml", type_="iq4_nl", source="g.json")["hyps"]["a"] == ["x y", "z"]
    with pytest.raises(ValueError, match="2 systems with method 'ggml'") as e:
        find_system(doc, "ggml", source="g.json")
    assert "ggml@iq4_nl:greedy" in str(e.value) and "ggml@q4_0:greedy" in str(e.value)
    with pytest.raises(ValueError, match="0 systems with method 'ggml' and type 'q5_0'"):
        find_system(doc, "ggml", type_="q5_0", source="g.json")


def test_a_document_of_another_format_is_refused():
    with pytest.raises(ValueError, match="not a tarq grid result"):
        find_system({"format": "tarq-eval-result"}, "qep", source="e.json")


def test_datasets_pair_hypotheses_with_the_grids_ids_and_skip_redacted_or_undecoded_sets():
    doc = _doc()
    sets = system_datasets(doc, find_system(doc, "f16", source="g.json"))
    assert list(sets) == ["a"]                                           # b's references are redacted
    assert sets["a"].ids == ["a1", "a2"] and sets["a"].refs == ["x y", "z"] and sets["a"].hyps == ["x y", ""]
    doc["utterances"]["b"]["refs"] = ["p"]
    assert list(system_datasets(doc, find_system(doc, "qep", "greedy", source="g.json"))) == ["a"]  # b not decoded
