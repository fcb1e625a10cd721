"""The heuristic annotator's rules on word lists built for each category, the replay TSV round
trip, and the three-step protocol's temperatures (§3.3) with a recording chat stub."""

from __future__ import annotations

import pytest

from shiftcheck.probes.ffn.annotators import Component, three_step
from shiftcheck.probes.ffn.annotators.heuristic import HeuristicAnnotator
from shiftcheck.probes.ffn.annotators.replay import load_annotations, write_annotations

LISTS = {
    "morphology": ("walking talking running jumping singing reading writing cooking swimming eating "
                   "sleeping dancing painting driving climbing", "Morphology", "daily writing"),
    "phonology": ("light night right fight might sight tight bright flight slight knight plight height "
                  "weight freight", "Phonology", "daily writing"),
    "syntax": ("the of and to in for on with at by from into over under between", "Syntax", "daily writing"),
    "coding": ("def return import lambda self print numpy append len str dict class range json api",
               "Semantic", "coding"),
    "math": ("equation integral derivative matrix vector theorem polynomial sum prime fraction algebra geometry "
             "calculus exponent logarithm", "Semantic", "solving math problems"),
    "translation": ("perro casa gracias mujer ciudad ahora siempre nunca mucho bueno libro agua noche tiempo mundo",
                    "Semantic", "translation"),
}


@pytest.mark.parametrize("name", list(LISTS))
def test_rule_per_category(name):
    text, level, scenario = LISTS[name]
    a = HeuristicAnnotator().label(Component(0, 1, tuple(text.split())))
    assert a.explainable, (name, a)
    assert a.level == level, (name, a)
    assert scenario in a.scenario, (name, a)


def test_cannot_tell_when_no_rule_covers_half():
    words = "zebra 1998 quickly Paris yellowish tree an blorp mr sql castle honest purple oxygen jazz".split()
    a = HeuristicAnnotator().label(Component(0, 1, tuple(words)))
    assert not a.explainable and a.description == "Cannot Tell"


def test_seven_of_fifteen_is_not_half():
    words = ["walking", "talking", "running", "jumping", "singing", "reading", "cooking"] + \
        "zebra castle honest purple oxygen jazz tree blorp".split()
    assert not HeuristicAnnotator().label(Component(0, 1, tuple(words))).explainable


def test_heuristic_is_deterministic_single_repetition():
    reps = HeuristicAnnotator().annotate([Component(0, 1, tuple(LISTS["math"][0].split()))], 5)
    assert len(reps) == 1


def test_replay_round_trip(tmp_path):
    comps = [Component(l, r, tuple(LISTS[k][0].split())) for l, r, k in ((0, 1, "math"), (1, 2, "syntax"))]
    comps.append(Component(1, 3, ("zzz",) * 15))
    reps = HeuristicAnnotator().annotate(comps, 1)
    path = write_annotations(reps, tmp_path / "a.tsv", "M", "1B")
    back = load_annotations(path)
    assert [(a.layer, a.rank, a.explainable, a.scenario, a.level) for a in back[0]] == \
        [(a.layer, a.rank, a.explainable, a.scenario, a.level) for a in reps[0]]
    assert load_annotations(path, max_rank=1)[0][0].rank == 1  # Rank <= R (§3.4)


def test_three_step_uses_method_temperatures():
    calls = []

    def chat(messages, temperature, top_p, seed):
        calls.append((messages[-1]["content"][:6], temperature, top_p, seed))
        return "things" if messages[-1]["content"].startswith("Words") else "coding"

    a = three_step(chat, Component(0, 1, ("a", "b")), seed=3)
    assert a.explainable and a.scenario == "coding"
    assert calls == [("Words:", 1.0, 0.9, 3), ("Concep", 0.0, 0.9, 3), ("Concep", 0.0, 0.9, 3)]
