"""The batched attribution paths start at the final hidden state (the unembedding seam,
probes/importance/attribution.py): they must give the per-token loop's I on any transformers causal
LM, tied or untied, and a model that changes its logits after the head must take the exact
through-logits fallback. Progress inside one attribution is counted in response tokens."""

from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from builders import tiny_model, word_tokenizer
from shiftcheck.probes import importance as imp
from shiftcheck.probes.importance import attribution as att
from shiftcheck.probes.importance import (
    ImportanceConfig,
    PromptEncoding,
    head_cotangent,
    importance_jvp,
    importance_loop,
    importance_vjp,
    normalise,
)
from shiftcheck.probes.prompts import Prompt

VOCAB = 48
# (family, tie_word_embeddings, bos): GPT-2 ties its head to the input embedding and has no BOS;
# Qwen2 has q/k/v biases; Gemma scales the input embeddings inside the trunk.
SHAPES = [("llama", False, True), ("llama", True, True), ("gpt2", None, False), ("qwen2", False, True),
          ("gemma", True, True)]


def encoding(n: int, bos: bool, rng: np.random.Generator) -> PromptEncoding:
    ids = tuple(int(i) for i in rng.integers(4, VOCAB, n))
    return PromptEncoding(prefix_ids=(1,) if bos else (), prompt_ids=ids, prompt_tokens=tuple(map(str, ids)),
                          instruction_mask=np.ones(n, dtype=bool), text="")


def _no_fallback(*args, **kwargs):
    raise AssertionError("the seam check failed on a plain transformers model: the fallback ran")


def assert_same_attribution(got: np.ndarray, ref: np.ndarray) -> None:
    # float32 through a few layers: relative 1e-4 of the entry, or 1e-5 of the matrix's largest entry
    torch.testing.assert_close(torch.from_numpy(got), torch.from_numpy(ref), rtol=1e-4,
                               atol=1e-5 * float(np.abs(ref).max()))
    assert (normalise(got) == normalise(ref)).mean() >= 0.98  # the levels the paper analyses


@settings(max_examples=12, deadline=None)
@given(shape=st.sampled_from(SHAPES), seed=st.integers(0, 2**16), n=st.integers(1, 9), m=st.integers(1, 14),
       chunk=st.integers(1, 16))
def test_batched_paths_from_the_hidden_state_equal_the_per_token_loop(shape, seed, n, m, chunk):
    family, tied, bos = shape
    model = tiny_model(family, vocab_size=VOCAB, seed=seed, tie_word_embeddings=tied)
    rng = np.random.default_rng(seed)
    enc, resp = encoding(n, bos, rng), [int(i) for i in rng.integers(4, VOCAB, m)]
    ref = importance_loop(model, enc, resp)
    assert np.abs(ref).max() > 0
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(att, "vjp_through_logits", _no_fallback)
        mp.setattr(att, "jvp_through_logits", _no_fallback)
        assert_same_attribution(importance_vjp(model, enc, resp, chunk), ref)
        assert_same_attribution(importance_jvp(model, enc, resp, chunk), ref)


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**16), tied=st.booleans(), bias=st.booleans(), m=st.integers(1, 8))
def test_head_cotangent_is_the_unembedding_of_onehot_minus_softmax(seed, tied, bias, m):
    """d log p_j / d h_j = W_U^T (onehot(t_j) - softmax_j), written out by hand (a bias moves the
    softmax only)."""
    model = tiny_model("llama", vocab_size=VOCAB, seed=seed, tie_word_embeddings=tied)
    head = model.get_output_embeddings()
    if bias:
        head = torch.nn.Linear(head.in_features, head.out_features, bias=True)
        with torch.no_grad():
            head.weight.copy_(model.get_output_embeddings().weight)
            head.bias.copy_(torch.randn(VOCAB, generator=torch.Generator().manual_seed(seed)))
    g = torch.Generator().manual_seed(seed + 1)
    h = torch.randn(m, head.in_features, generator=g)
    targets = torch.randint(0, VOCAB, (m,), generator=g)
    G, logp = head_cotangent(head, h, targets)
    W = head.weight.detach()
    with torch.no_grad():
        logits = h @ W.T + (head.bias if head.bias is not None else 0.0)
        softmax = torch.softmax(logits, -1)
    onehot = torch.nn.functional.one_hot(targets, VOCAB).float()
    torch.testing.assert_close(G, (onehot - softmax) @ W, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(logp, torch.log(softmax[torch.arange(m), targets]), rtol=1e-5, atol=1e-6)
    if tied and not bias:  # the tied head is the input embedding itself
        assert W.data_ptr() == model.get_input_embeddings().weight.data_ptr()


class SoftCapped(torch.nn.Module):
    """A causal LM that soft-caps its logits after the head (as Gemma 2 does): head(h) is not the
    model's logits, so the seam would give a wrong I."""

    def __init__(self, inner: torch.nn.Module, cap: float = 0.5) -> None:
        super().__init__()
        self.inner, self.cap = inner, cap
        self.config = inner.config

    @property
    def base_model(self) -> torch.nn.Module:
        return self.inner.base_model

    def get_input_embeddings(self) -> torch.nn.Module:
        return self.inner.get_input_embeddings()

    def get_output_embeddings(self) -> torch.nn.Module:
        return self.inner.get_output_embeddings()

    def forward(self, inputs_embeds: torch.Tensor, **kwargs) -> SimpleNamespace:
        out = self.inner(inputs_embeds=inputs_embeds, **kwargs)
        return SimpleNamespace(logits=self.cap * torch.tanh(out.logits / self.cap), hidden_states=out.hidden_states)


def test_a_model_that_changes_its_logits_after_the_head_takes_the_exact_fallback(monkeypatch):
    model = SoftCapped(tiny_model("llama", vocab_size=VOCAB, seed=5))
    rng = np.random.default_rng(5)
    enc, resp = encoding(6, True, rng), [int(i) for i in rng.integers(4, VOCAB, 9)]
    ref = importance_loop(model, enc, resp)
    used = []
    for name in ("vjp_through_logits", "jvp_through_logits"):
        real = getattr(att, name)
        monkeypatch.setattr(att, name, lambda *a, _real=real, _name=name, **k: used.append(_name) or _real(*a, **k))
    assert_same_attribution(importance_vjp(model, enc, resp, 4), ref)
    assert_same_attribution(importance_jvp(model, enc, resp, 4), ref)
    assert used == ["vjp_through_logits", "jvp_through_logits"]
    # and the seam alone would have been wrong here: the check is what keeps I right
    trunk, head = att._seam(model)
    E = att.input_embeddings(model, imp.build_sequence(enc, resp))
    rows = att._rows(enc, E.shape[0])
    with torch.no_grad():
        h, logits_rows = att.hidden_and_logits(model, E, rows)
        assert not att._seam_holds(head, h[rows], logits_rows)
        assert torch.equal(h, att.final_hidden(trunk, E))  # the same h: only the logits differ


@pytest.mark.parametrize("path", [importance_vjp, importance_jvp], ids=["vjp", "jvp"])
def test_the_memory_budget_sets_the_chunk_not_the_numbers(path):
    model = tiny_model("llama", vocab_size=VOCAB, seed=7)
    rng = np.random.default_rng(7)
    enc, resp = encoding(8, True, rng), [int(i) for i in rng.integers(4, VOCAB, 12)]
    passes: list[int] = []
    one_row = path(model, enc, resp, budget=1, rows_done=passes.append)  # below one row: one row per pass
    rows = 12 if path is importance_vjp else 8
    assert passes == [1] * rows
    passes.clear()
    roomy = path(model, enc, resp, budget=1 << 30, rows_done=passes.append)
    assert len(passes) < rows and sum(passes) == rows
    np.testing.assert_allclose(roomy, one_row, rtol=1e-5, atol=1e-7 * float(np.abs(one_row).max()))


PROMPTS = [Prompt(f"p{i}", "toy", text, ((0, 5),)) for i, text in enumerate(
    ["write a short poem", "list the red house and the sea", "explain the question"])]


@pytest.mark.parametrize("mode", ["vjp", "jvp", "loop"])
def test_attribution_reports_progress_per_pass_in_response_tokens(mode, monkeypatch):
    tokenizer = word_tokenizer()
    model = tiny_model("llama", vocab_size=len(tokenizer), seed=2)
    monkeypatch.setattr(imp, "PROGRESS_EVERY_S", 0.0)  # report every pass, not every few seconds
    calls: list[tuple[str, int, int]] = []
    config = ImportanceConfig(max_new_tokens=6, mode=mode, chunk_size=2)
    result = imp.run_importance(model, tokenizer, PROMPTS, config, progress=lambda *c: calls.append(c))
    attribute = [c for c in calls if c[0] != "generate"]
    assert {c[0] for c in attribute} == {imp.ATTRIBUTE_STAGE}
    assert imp.ATTRIBUTE_STAGE.endswith(" units")  # a CI log (no terminal) prints only "... units" stages
    total = sum(inst.n_response_tokens for inst in result.instances)
    assert total > 0 and {c[2] for c in attribute} == {total}
    done = [c[1] for c in attribute]
    assert done[-1] == total and done == sorted(done)
    # at least one report per pass: ceil(rows / 2) passes per prompt, rows = M (vjp) or N (jvp), 1 (loop)
    rows = [inst.n_response_tokens if mode != "jvp" else len(inst.prompt_tokens) for inst in result.instances]
    passes = sum(r if mode == "loop" else -(-r // 2) for r in rows)
    assert len(attribute) >= passes


def test_a_unit_faster_than_the_reporting_interval_prints_nothing(monkeypatch):
    """On small models a line per prompt would flood a CI log; the runner's unit line suffices."""
    tokenizer = word_tokenizer()
    model = tiny_model("llama", vocab_size=len(tokenizer), seed=2)
    monkeypatch.setattr(imp, "PROGRESS_EVERY_S", 1e9)
    calls: list[tuple[str, int, int]] = []
    imp.run_importance(model, tokenizer, PROMPTS, ImportanceConfig(max_new_tokens=6, chunk_size=2),
                       progress=lambda *c: calls.append(c))
    assert calls and all(c[0] == "generate" for c in calls)
