"""Annotator calibration (issue 19): the shipped set is intact and disjoint from what the heuristic
reads, bad annotators fail the gate, planted errors lower exactly the labels they touch, chat
annotators see a subset, and the heuristic passes (slow: one GloVe load)."""

from __future__ import annotations

import json
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftcheck.probes.ffn.annotators import Annotation, lexicons
from shiftcheck.probes.ffn.annotators import calibration as cal

LEVEL_ANSWER = {"phonology": "Phonology", "morphology": "Morphology", "syntax": "Syntax", "semantic": "Semantic"}
SCENARIO_ANSWER = {"writing": "daily writing", "math": "solving math problems", "coding": "coding",
                   "translation": "translation", None: "None"}


def items():
    return cal.load_set()[1]


class Oracle:
    """Answers from the true labels, except for the items in ``wrong`` (answered Semantic / daily writing
    when explainable, and 'things' instead of Cannot Tell)."""

    name = "oracle"

    def __init__(self, wrong=frozenset()):
        self.truth = {it.words: it for it in items()}
        self.wrong = wrong

    def answer(self, c):
        it = self.truth[c.words]
        if it.id in self.wrong:
            if not it.explainable:
                return Annotation(c.layer, c.rank, c.words, "things", "daily writing", "Semantic")
            return Annotation(c.layer, c.rank, c.words, "Cannot Tell")
        if not it.explainable:
            return Annotation(c.layer, c.rank, c.words, "Cannot Tell")
        return Annotation(c.layer, c.rank, c.words, "a concept", SCENARIO_ANSWER[it.scenario],
                          LEVEL_ANSWER.get(it.level, "Semantic"))

    def annotate(self, components, repetitions):
        return [[self.answer(c) for c in components] for _ in range(repetitions)]


class Fixed:
    """Gives the same answer to every component."""

    def __init__(self, name, description, scenario, level):
        self.name, self.answer = name, (description, scenario, level)

    def annotate(self, components, repetitions):
        return [[Annotation(c.layer, c.rank, c.words, *self.answer) for c in components]]


class Random:
    """Random level and scenario from the paper's options, a random 20 % Cannot Tell."""

    name = "random"

    def __init__(self, seed):
        self.rng = random.Random(seed)

    def annotate(self, components, repetitions):
        out = []
        for c in components:
            if self.rng.random() < 0.2:
                out.append(Annotation(c.layer, c.rank, c.words, "Cannot Tell"))
            else:
                out.append(Annotation(c.layer, c.rank, c.words, "x", self.rng.choice(list(SCENARIO_ANSWER.values())),
                                      self.rng.choice(list(LEVEL_ANSWER.values()))))
        return [out]


def test_set_sizes_and_digest():
    digest, its = cal.load_set()
    assert len(digest) == 64 and len(its) == 264
    assert all(len(it.words) == 15 and len(set(it.words)) == 15 for it in its)
    _, n = cal.score(its, Oracle().annotate([cal.Component(0, 1, it.words) for it in its], 1))
    assert all(n[k] >= 20 for k in cal.GATED), n


def test_tampered_set_is_refused(tmp_path):
    data = json.loads(cal.SET_PATH.read_text(encoding="utf-8"))
    data["items"][0]["level"] = "semantic"
    p = tmp_path / "set.json"
    p.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(cal.CalibrationSetError, match="digest"):
        cal.load_set(str(p))


def test_pool_words_are_disjoint_from_the_heuristic_lists():
    from shiftcheck.probes.ffn.annotators import heuristic as h

    used = {g: {w for it in items() if it.group == g for w in it.words} for g in ("syntax", "coding", "math")}
    assert not used["syntax"] & h.FUNCTION_WORDS
    assert not used["coding"] & (h.CODE_WORDS | h.MATH_WORDS | h.FUNCTION_WORDS)
    assert not used["math"] & (h.MATH_WORDS | h.CODE_WORDS | h.FUNCTION_WORDS)
    for it in items():
        if it.group == "phonology":
            assert lexicons.half("rhyme:" + it.source.rsplit("part ", 1)[1]) == "B"


def test_rhymes_are_spelled_apart():
    # a spelling rule needs 8 of 15 words with one ending: no phonology item offers it
    for it in items():
        if it.group == "phonology":
            for k in (2, 3):
                ends = [w[-k:] for w in it.words]
                assert max(ends.count(e) for e in ends) <= 7, it


def test_oracle_passes_with_full_marks():
    c = cal.calibrate(Oracle())
    assert c.passed and c.reason == "" and set(c.per_label.values()) == {1.0}


@pytest.mark.parametrize("bad", [
    Fixed("semantic-for-everything", "a topic", "daily writing", "Semantic"),
    Fixed("cannot-tell-for-everything", "Cannot Tell", "", ""),
    Fixed("says-every-label", "everything", "daily writing; solving math problems; coding; translation",
          "Phonology, Morphology, Syntax or Semantic"),
    Random(0), Random(1),
], ids=lambda a: a.name)
def test_bad_annotators_fail_the_gate(bad):
    c = cal.calibrate(bad)
    assert not c.passed and c.reason
    assert "calibration of " + bad.name + ": FAILED" in c.summary()


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(sorted({it.group for it in cal.load_set()[1]})), st.integers(0, 15), st.integers(0, 10**6))
def test_planted_errors_lower_their_labels_by_their_share(group, k, seed):
    members = [it for it in items() if it.group == group]
    wrong = frozenset(it.id for it in random.Random(seed).sample(members, min(k, len(members))))
    c = cal.calibrate(Oracle(wrong))
    for label, n in c.per_label_n.items():
        hit = [it for it in items() if it.id in wrong and label in cal.scores(it, Oracle().answer(
            cal.Component(0, 1, it.words)))]
        assert c.per_label[label] == pytest.approx(1 - len(hit) / n)
    assert c.passed == all(v >= c.minimum for v in c.per_label.values())


def test_chat_annotators_see_a_subset_per_group():
    seen = []

    class Chat(Oracle):
        name = "hf:tiny"

        def annotate(self, components, repetitions):
            seen.append(len(components))
            return super().annotate(components, repetitions)

    c = cal.calibrate(Chat(), repetitions=2)
    groups = {it.group for it in items()}
    assert seen == [cal.CHAT_PER_GROUP * len(groups)] and c.n_items == seen[0] and c.repetitions == 2
    assert cal.calibrate(Chat(), per_group=1).n_items == len(groups)


def test_to_dict_round_trips_the_fields():
    c = cal.calibrate(Fixed("semantic-for-everything", "a topic", "daily writing", "Semantic"))
    d = c.to_dict()
    assert d["annotator"] == "semantic-for-everything" and d["passed"] is False
    assert d["per_label"]["semantic"] == 1.0 and d["per_label"]["phonology"] == 0.0
    assert d["set_digest"] == cal.load_set()[0] and "phonology 0.00" in d["reason"]


@pytest.mark.slow
def test_heuristic_passes_and_without_glove_fails():
    from shiftcheck.probes import words
    from shiftcheck.probes.ffn.annotators.heuristic import HeuristicAnnotator

    c = cal.calibrate(HeuristicAnnotator(glove=words.load_glove()))
    assert c.passed, c.summary()
    bare = cal.calibrate(HeuristicAnnotator())
    assert not bare.passed and "syntax" in bare.reason, bare.summary()
