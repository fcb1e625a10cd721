"""Finding 1's release check attributes the artifact on its source's responses (probes/release/forced.py).

Known truths used here: teacher-forcing a model's own greedy responses must reproduce the attribution
of those responses generated (the same text, the same model); a source whose finding-1 units are
cached is never loaded for the forced probe; an artifact attributed before its source stored its
responses is an error, not a silent attribution of its own text.
"""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest

from builders import tiny_model, word_tokenizer
from shiftcheck.probes import importance as imp
from shiftcheck.probes.cache import ResultCache
from shiftcheck.probes.importance import ImportanceConfig
from shiftcheck.probes.importance.probe import ImportanceProbe
from shiftcheck.probes.prompts import Prompt
from shiftcheck.probes.release.forced import (ForcedImportanceProbe, ForcedResponsesMissing, greedy_agreement,
                                              seed_source_entries)
from shiftcheck.probes.runner import run

PROMPTS = tuple(Prompt(f"p{i}", "toy", text, ((0, 5),)) for i, text in enumerate(
    ["write a short poem", "list the red house and the sea", "explain the question"]))
CONFIG = ImportanceConfig(max_new_tokens=6, chunk_size=2)


def _checkpoint(spec: str, seed: int) -> SimpleNamespace:
    tokenizer = word_tokenizer()
    return SimpleNamespace(spec=spec, model=tiny_model("llama", vocab_size=len(tokenizer), seed=seed),
                           tokenizer=tokenizer)


def _never_load():
    raise AssertionError("the source was loaded although its finding-1 units are cached")


def test_teacher_forcing_a_models_own_responses_reproduces_its_attribution():
    ckpt = _checkpoint("m", seed=2)
    generated = imp.run_importance(ckpt.model, ckpt.tokenizer, PROMPTS, CONFIG)
    assert any(inst.response_ids for inst in generated.instances)
    forced = imp.run_importance(ckpt.model, ckpt.tokenizer, PROMPTS, CONFIG,
                                responses=[inst.response_ids for inst in generated.instances])
    for g, f in zip(generated.instances, forced.instances):
        assert f.response_ids == g.response_ids
        np.testing.assert_array_equal(f.S0, g.S0)


def test_a_wrong_number_of_responses_is_refused():
    ckpt = _checkpoint("m", seed=2)
    with pytest.raises(ValueError, match="2 responses given for 3 prompts"):
        imp.run_importance(ckpt.model, ckpt.tokenizer, PROMPTS, CONFIG, responses=[(5,), (6,)])


def test_the_artifact_attributes_the_sources_responses_and_the_source_is_not_loaded_again(tmp_path):
    source, artifact = _checkpoint("source", seed=2), _checkpoint("artifact", seed=7)
    cache = ResultCache(tmp_path)
    importance = ImportanceProbe(PROMPTS, CONFIG, shard_size=2)  # two units
    src_own = run(importance, "tuned", "fp-src", cache, lambda: source).result
    art_own = imp.run_importance(artifact.model, artifact.tokenizer, PROMPTS, CONFIG)
    assert [i.response_ids for i in art_own.instances] != [i.response_ids for i in src_own.instances]

    forced = ForcedImportanceProbe(importance, "source", "fp-src", cache)
    assert seed_source_entries(forced) == 2 and seed_source_entries(forced) == 0  # copied once
    src = run(forced, "tuned", "fp-src", cache, _never_load).result
    art = run(forced, "artifact", "fp-art", cache, lambda: artifact).result

    assert [i.response_ids for i in src.instances] == [i.response_ids for i in src_own.instances]
    assert [i.response_ids for i in art.instances] == [i.response_ids for i in src_own.instances]
    by_hand = imp.run_importance(artifact.model, artifact.tokenizer, PROMPTS, CONFIG,
                                 responses=[i.response_ids for i in src_own.instances])
    for a, b in zip(art.instances, by_hand.instances):
        np.testing.assert_array_equal(a.S0, b.S0)


def test_the_artifacts_entries_are_keyed_apart_from_its_own_attribution(tmp_path):
    """An artifact later vetted as --tuned must not be served its forced attribution."""
    from shiftcheck.probes.units import unit_key

    importance = ImportanceProbe(PROMPTS, CONFIG)
    forced = ForcedImportanceProbe(importance, "source", "fp-src", ResultCache(tmp_path))
    unit = importance.units()[0]
    assert unit_key(forced, "fp-art", unit).digest != unit_key(importance, "fp-art", unit).digest
    other_source = ForcedImportanceProbe(importance, "source2", "fp-src2", ResultCache(tmp_path))
    assert unit_key(forced, "fp-art", unit).digest != unit_key(other_source, "fp-art", unit).digest


def test_an_artifact_run_before_its_source_is_an_error(tmp_path):
    artifact = _checkpoint("artifact", seed=7)
    importance = ImportanceProbe(PROMPTS, CONFIG)
    forced = ForcedImportanceProbe(importance, "source", "fp-src", ResultCache(tmp_path))
    assert seed_source_entries(forced) == 0  # nothing cached to copy
    with pytest.raises(ForcedResponsesMissing, match="source's responses"):
        forced.run_unit(artifact, importance.units()[0], None)


def test_greedy_agreement_needs_every_token_of_the_response():
    agree = greedy_agreement({"a": np.array([True, True, True]), "b": np.array([True, False, True]),
                              "c": np.array([], dtype=bool)})
    assert agree == {"a": True, "b": False, "c": True}  # an empty response is reproduced trivially
