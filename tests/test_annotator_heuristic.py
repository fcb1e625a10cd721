"""The heuristic annotator's rules on positive and negative examples (issue 19: pronunciation, not
spelling; families, not bare affixes; language identity), the replay TSV round trip, and the
three-step protocol's temperatures (§3.3) with a recording chat stub.

One module-scoped GloVe load (the annotator's GloVe rules), about 10-20 s on a busy 2-core CPU."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftcheck.probes.ffn.annotators import Component, three_step
from shiftcheck.probes.ffn.annotators.heuristic import HeuristicAnnotator, derivations, inflections, rhymes
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
    "topic": ("apple banana cherry grape lemon mango peach pear plum orange melon kiwi papaya apricot lime",
              "Semantic", "daily writing"),
}


@pytest.fixture(scope="module")
def heur():
    from shiftcheck.probes import words

    return HeuristicAnnotator(glove=words.load_glove())


def label(annotator, text):
    return annotator.label(Component(0, 1, tuple(text.split())))


@pytest.mark.parametrize("name", list(LISTS))
def test_rule_per_category(heur, name):
    text, level, scenario = LISTS[name]
    a = label(heur, text)
    assert a.explainable, (name, a)
    assert a.level == level, (name, a)
    assert scenario in a.scenario, (name, a)


def test_spelling_alike_is_not_phonology(heur):
    # -ough spelled alike, pronounced /ɒf/, /oʊ/, /uː/: no shared rhyme
    assert len({p for w in ("cough", "dough", "through") for p in rhymes(w)}) >= 3
    a = label(heur, "cough dough through")
    assert a.level != "Phonology", a


def test_sound_alike_spelled_apart_is_phonology(heur):
    a = label(heur, "blue two shoe flew")
    assert a.level == "Phonology" and "UW1" in a.description, a
    b = label(heur, "blue two shoe flew through you who crew queue view glue zoo knew true canoe")
    assert b.level == "Phonology", b


def test_bare_affix_is_not_morphology(heur):
    assert not derivations("general") and not derivations("animal") and not derivations("hospital")
    assert label(heur, "general animal hospital").level != "Morphology"
    assert derivations("darkness") == {"-ness"} and "-ful" in derivations("hopeful")


def test_irregular_inflections_are_morphology(heur):
    # no shared spelling at all: only the lemmatizer sees that these are past tenses
    assert all("past" in inflections(w) for w in ("went", "ate", "took", "gave", "saw"))
    a = label(heur, "went ate took gave saw ran drove wrote spoke broke chose froze stole swam sang")
    assert a.level == "Morphology" and "past" in a.description, a


def test_french_function_words_are_translation_not_semantic(heur):
    a = label(heur, "le la les des du avec pour dans sur nous vous ils mais donc aussi")
    assert "translation" in a.scenario and a.level == "Syntax", a


def test_english_function_words_are_not_code(heur):
    # Python keywords that are English function words must not turn a syntax list into code
    a = label(heur, "if for while and or not in is as with from else than then because")
    assert a.level == "Syntax" and "coding" not in a.scenario, a


def test_cannot_tell_when_no_rule_covers_half(heur):
    words = "zebra 1998 quickly Paris yellowish tree an blorp mr sql castle honest purple oxygen jazz".split()
    a = heur.label(Component(0, 1, tuple(words)))
    assert not a.explainable and a.description == "Cannot Tell"


def test_seven_of_fifteen_is_not_half(heur):
    words = ["walking", "talking", "running", "jumping", "singing", "reading", "cooking"] + \
        "zebra castle honest purple oxygen jazz tree blorp".split()
    h = heur.hits(words)
    assert h.morphology[1] == 7 and not h.fires(h.morphology[1])
    assert heur.label(Component(0, 1, tuple(words))).level != "Morphology"  # GloVe may still see a topic


@settings(max_examples=25, deadline=None)
@given(st.sampled_from(sorted(LISTS)), st.randoms(use_true_random=False))
def test_label_ignores_word_order(heur, name, rnd):
    words = LISTS[name][0].split()
    shuffled = list(words)
    rnd.shuffle(shuffled)
    a, b = label(heur, " ".join(words)), label(heur, " ".join(shuffled))
    assert (a.level, a.scenario, a.explainable) == (b.level, b.scenario, b.explainable)


def test_heuristic_is_deterministic_single_repetition(heur):
    reps = heur.annotate([Component(0, 1, tuple(LISTS["math"][0].split()))], 5)
    assert len(reps) == 1


def test_without_glove_rules_that_need_it_stay_silent():
    # no GloVe: no coherence rule, so a topical list of ordinary words is not explained
    a = HeuristicAnnotator().label(Component(0, 1, tuple(LISTS["topic"][0].split())))
    assert not a.explainable, a


def test_replay_round_trip(heur, tmp_path):
    comps = [Component(l, r, tuple(LISTS[k][0].split())) for l, r, k in ((0, 1, "math"), (1, 2, "syntax"))]
    comps.append(Component(1, 3, ("zzz",) * 15))
    reps = heur.annotate(comps, 1)
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
