"""Finding 3 can pass and fail: planted FFN rotations on the lexical base (tests/lexical.py).

The lexical base's tied embeddings are GloVe-50d projected to d_model = 64: a 15-word cluster is
not linearly separable there (measured: the best direction toward 12 maths words shows 0-2 of them
in its top 15). So this test base adds one feature direction per cluster to the embedding rows of
the cluster's words, the SAME in base and tuned: spelling features stand in for the subword tokens
that words with one ending share in a real BPE model (-ing, -ly, -tion, -ment; -ight, -ate, -ine),
topic features for what a trained model encodes (maths, code). Base and tuned then differ only in
their down-projections: some of the lowest-variance principal directions of W_out are rotated onto
cluster directions (the SVD is rebuilt with the same singular values).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from lexical import lexical_model, lexical_vocab  # noqa: E402

from shiftcheck.probes import ffn, words  # noqa: E402
from shiftcheck.probes.ffn import concepts
from shiftcheck.probes.ffn.annotators import Annotation  # noqa: E402
from shiftcheck.probes.ffn.annotators.heuristic import CODE_WORDS, MATH_WORDS, HeuristicAnnotator  # noqa: E402
from shiftcheck.probes.models.architectures import WeightViews  # noqa: E402

BASE_CLUSTERS = ("ing", "ly", "tion", "ment", "code", "math0")
MATHS = ("math1", "math2")
PHONOLOGY = ("ight", "ate", "ine")


def _members(name: str, vocab: list[str]) -> list[str]:
    if name.startswith("math"):
        pool = sorted(w for w in vocab if w in MATH_WORDS)
        return pool[int(name[-1])::3]  # three disjoint maths sub-clusters
    if name == "code":
        return [w for w in vocab if w in CODE_WORDS]
    return [w for w in vocab if w.endswith(name) and len(w) > len(name) + (0 if name in PHONOLOGY else 2)]


@pytest.fixture(scope="module")
def lexical():
    kv = words.load_glove()
    vocab = lexical_vocab(kv)
    model, tok = lexical_model(kv, vocab)
    rng = np.random.default_rng(1)
    emb = model.get_input_embeddings().weight
    feats = {}
    with torch.no_grad():
        for name in BASE_CLUSTERS + MATHS + PHONOLOGY:
            f = torch.tensor(rng.normal(size=emb.shape[1]), dtype=emb.dtype)
            feats[name] = f / f.norm()
            for w in _members(name, vocab):
                emb[vocab.index(w)] += 1.5 * feats[name]
    return model, tok, vocab[4:], feats


def rotate_onto(W_out: torch.Tensor, targets: list[torch.Tensor]) -> torch.Tensor:
    """Rotate the ``len(targets)`` lowest-variance principal directions of ``W_out`` (d_mlp, d_model)
    onto the (orthonormalised) targets; the other directions are re-orthonormalised in their order."""
    W = W_out.double()
    mu = W.mean(0, keepdim=True)
    U, S, Vh = torch.linalg.svd(W - mu, full_matrices=False)
    k = len(targets)
    Q = torch.linalg.qr(torch.stack([t.double() for t in targets], 1))[0]  # (d_model, k)
    keep = Vh[: Vh.shape[0] - k].T
    keep = torch.linalg.qr(keep - Q @ (Q.T @ keep))[0]
    return (U @ torch.diag(S) @ torch.cat([keep, Q], 1).T + mu).to(W_out.dtype)


def _annotated(model, tok, vocab, feats, clusters) -> list[list[Annotation]]:
    """Plant ``clusters`` in every layer of a copy of the weights, run the probe and the heuristic."""
    import copy

    m = copy.deepcopy(model)
    with torch.no_grad():
        for layer in m.model.layers:
            down = layer.mlp.down_proj.weight  # (d_model, d_mlp): W_out is its transpose
            down.copy_(rotate_onto(down.t(), [feats[c] for c in clusters]).t())
    res = ffn.ffn_components(WeightViews(m), tok, vocab, ffn.FfnConfig(n_components=64, top_k=50))
    return HeuristicAnnotator().annotate(concepts.components_of(res), 1)


@pytest.fixture(scope="module")
def base(lexical):
    return _annotated(*lexical, BASE_CLUSTERS)


def test_planted_rotation_reproduces_its_words(lexical):
    model, tok, vocab, feats = lexical
    W = model.model.layers[0].mlp.down_proj.weight.t()
    W2 = rotate_onto(W, [feats["ight"]])
    ratio, V = ffn.principal_directions(ffn.centre_columns(W2.double()), 64)
    ratio0, _ = ffn.principal_directions(ffn.centre_columns(W.double()), 64)
    torch.testing.assert_close(ratio, ratio0)  # same spectrum: only directions moved
    E, _ = ffn.word_vectors_for(WeightViews(model), tok, vocab)
    idx, _ = ffn.top_words(V[-1:], E.double(), 15)
    top = [vocab[i] for i in idx[0]]
    assert sum(w.endswith("ight") for w in top) >= 8, top


def test_null_pair_passes_unchanged(base):
    v = concepts.linguistic_unchanged(base, base, 3.0, 0.05, "heuristic")
    assert v.outcome == "pass", v.obtained
    assert v.numbers["min_explainable"] >= concepts.MIN_EXPLAINABLE


def test_maths_rotation_raises_maths_share(lexical, base):
    tuned = _annotated(*lexical, BASE_CLUSTERS + MATHS)
    rows = {r.category: r for r in concepts.compare(base, tuned, "scenario", concepts.SCENARIOS)}
    assert rows["math"].tuned_mean > rows["math"].base_mean, concepts.table(rows.values())
    cb, _ = concepts.counts(base, "scenario", ["math"])
    ct, _ = concepts.counts(tuned, "scenario", ["math"])
    assert ct[0] - cb[0] >= 4, (cb, ct)  # 2 maths directions planted in each of the 4 layers
    assert concepts.user_tasks_not_lower(base, tuned, 3.0, 0.05, "heuristic").passed


def test_phonological_rotation_fails_unchanged(lexical, base):
    tuned = _annotated(*lexical, BASE_CLUSTERS + PHONOLOGY)
    v = concepts.linguistic_unchanged(base, tuned, 3.0, 0.05, "heuristic")
    assert v.outcome == "fail", v.obtained
    assert "phonology" in v.reason and "phonology" in v.obtained
