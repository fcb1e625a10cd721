"""Replay of released explanation files (METHODS §6) and finding 1 on the authors' real data."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from shiftcheck.probes.findings import POOLED, density_shift, groups_of
from shiftcheck.probes.importance import normalise
from shiftcheck.probes.replay import ReplayError, load_replay, resolve_prefix

PAPER_DATA = Path(os.environ.get("SHIFTCHECK_PAPER_DATA", Path(__file__).resolve().parents[2] / "shared" / "paper-data"))
needs_paper_data = pytest.mark.skipif(
    not (PAPER_DATA / "attribution" / "llama_7b.npz").is_file(),
    reason="needs the authors' released data converted to replay files: run "
    "`shiftcheck paper-data convert <clone of JacksonWuxs/Interpret_Instruction_Tuning_LLMs> <dir>` and set "
    f"SHIFTCHECK_PAPER_DATA=<dir> (docs/PAPER_DATA.md); not found at {PAPER_DATA}",
)


def write_dump(prefix: Path, matrices: dict[str, np.ndarray], masks: dict[str, list[int]], source: str = "toy") -> Path:
    np.savez(prefix.with_suffix(".npz"), **matrices)
    with prefix.with_suffix(".jsonl").open("w") as fh:
        for key, S in matrices.items():
            fh.write(json.dumps({
                "id": key, "source": source, "prompt_tokens": [f"t{i}" for i in range(S.shape[0])],
                "response_tokens": [f"r{j}" for j in range(S.shape[1])], "instruction_token_mask": masks[key],
            }) + "\n")
    return prefix


@needs_paper_data
def test_released_llama_vs_vicuna_shows_the_shift_in_every_group_and_swapped_does_not():
    llama = load_replay(PAPER_DATA / "attribution" / "llama_7b")
    vicuna = load_replay(PAPER_DATA / "attribution" / "vicuna_7b")
    assert len(llama.instances) == len(vicuna.instances) == 632
    groups = groups_of(llama)
    assert groups == ["lima", "mt-bench", "self-instruct", POOLED]
    for group in groups:
        forward = density_shift(llama, vicuna, group)
        assert forward.holds(0.05), forward
        assert not density_shift(vicuna, llama, group).holds(0.05)
    pooled = density_shift(llama, vicuna, POOLED)
    assert pooled.p_value < 1e-10 and pooled.a_n == pooled.b_n == pooled.paired_n == 632
    assert pooled.ci_low > 0


@needs_paper_data
def test_released_matrices_are_levels_with_one_empty_response():
    llama = load_replay(PAPER_DATA / "attribution" / "llama_7b")
    assert all(inst.S0.dtype == np.uint8 and inst.S0.max(initial=0) <= 10 for inst in llama.instances)
    empty = [inst for inst in llama.instances if inst.n_response_tokens == 0]
    assert len(empty) == 1 and empty[0].score() == 0.0


def test_float_raw_importance_is_normalised_and_levels_are_kept(tmp_path):
    rng = np.random.default_rng(0)
    raw = rng.normal(size=(5, 7)).astype(np.float32)
    levels = normalise(rng.normal(size=(4, 3)))
    prefix = write_dump(tmp_path / "dump", {"a": raw, "b": levels}, {"a": [1, 1, 0, 0, 0], "b": [0, 1, 1, 0]})
    result = load_replay(prefix)
    np.testing.assert_array_equal(result.instances[0].S0, normalise(raw))
    np.testing.assert_array_equal(result.instances[1].S0, levels)
    assert result.instances[0].instruction_mask.tolist() == [True, True, False, False, False]


def test_prefix_forms_are_accepted(tmp_path):
    write_dump(tmp_path / "dump", {"a": np.ones((2, 2))}, {"a": [1, 0]})
    for spec in (tmp_path, tmp_path / "dump", tmp_path / "dump.npz", tmp_path / "dump.jsonl"):
        assert resolve_prefix(spec) == tmp_path / "dump"


@pytest.mark.parametrize(
    "matrices,masks,message",
    [
        ({"a": np.ones((3, 2))}, {"a": [1, 0]}, "3 prompt rows but the JSONL lists"),
        ({"a": np.full((2, 2), np.nan)}, {"a": [1, 0]}, "NaN"),
        ({"a": np.ones(4)}, {"a": [1, 0, 0, 0]}, "2-d matrix"),
    ],
)
def test_malformed_dumps_get_specific_errors(tmp_path, matrices, masks, message):
    prefix = tmp_path / "dump"
    np.savez(prefix.with_suffix(".npz"), **matrices)
    with prefix.with_suffix(".jsonl").open("w") as fh:
        for key, mask in masks.items():
            fh.write(json.dumps({"id": key, "prompt_tokens": ["x"] * len(mask), "instruction_token_mask": mask}) + "\n")
    with pytest.raises(ReplayError, match=message):
        load_replay(prefix)


def test_missing_files_and_ids_are_named(tmp_path):
    with pytest.raises(ReplayError, match="replay file not found: .*nothing.npz"):
        load_replay(tmp_path / "nothing")
    prefix = write_dump(tmp_path / "dump", {"a": np.ones((2, 2))}, {"a": [1, 0]})
    with prefix.with_suffix(".jsonl").open("a") as fh:
        fh.write(json.dumps({"id": "ghost", "prompt_tokens": ["x"], "instruction_token_mask": [1]}) + "\n")
    with pytest.raises(ReplayError, match=r"\[ghost\]: id listed in the JSONL has no matrix"):
        load_replay(prefix)
