"""Finding 3 can pass and fail on planted FFN rotations whose clusters the annotator never read.

The clusters are items of the shipped calibration set (``probes/data/calibration``): CMUdict rhyme
groups, maths terms, topical and foreign-language lists drawn from the half of each resource the
heuristic annotator does not use (``annotators/lexicons.half``). They are planted in the lexical
base of tests/lexical.py (GloVe-initialised tiny Llama, tied embeddings, d_model 64, 4 layers): a
15-word cluster is not linearly separable in a 64-d projection of GloVe-50d (measured: 0-2 words of
a 12-word maths list in the best direction's top 15), so one feature direction per cluster is added
to the embedding rows of its words, the SAME in every model. Models then differ only in their
down-projections, whose lowest-variance principal directions are rotated onto cluster directions
(same singular values). The heuristic annotator labels every component, and the verdicts compare:

* base vs base (nothing planted differs): "unchanged" is not a pass on ~100 explainable
  components (inconclusive), the rise fails;
* base vs base + rhyme clusters: "unchanged" FAILS, naming phonology;
* base vs a tune that rotates the translation clusters into maths clusters: the user-task rise
  PASSES (adding maths on top of a base whose explainable components are ~75 % user tasks already
  moves the union share by only ~5 pp: measured p = 0.13 with ~150 components).
"""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent))
from lexical import lexical_model, lexical_vocab  # noqa: E402

from shiftcheck.probes import ffn, words  # noqa: E402
from shiftcheck.probes.ffn import concepts  # noqa: E402
from shiftcheck.probes.ffn.annotators.calibration import SET_PATH  # noqa: E402
from shiftcheck.probes.ffn.annotators.heuristic import HeuristicAnnotator  # noqa: E402
from shiftcheck.probes.models.architectures import WeightViews  # noqa: E402

# clusters planted per layer; base = translation + topic (non-user-task concepts and a few writing topics)
PLAN = {"translation": {"translation": 8}, "topic": {"topic": 3}, "phonology": {"phonology": 12},
        "math": {"math": 12}}
BASE = ("translation", "topic")
SOURCE = concepts.LabelSource("heuristic", None, "planted test: labels of the annotator under test")


def calibration_items() -> dict[str, list[list[str]]]:
    items = json.loads(SET_PATH.read_text(encoding="utf-8"))["items"]
    out: dict[str, list[list[str]]] = {}
    for it in items:
        out.setdefault(it["group"], []).append(list(it["words"]))
    return out


@pytest.fixture(scope="module")
def lexical():
    """(model, tokenizer, candidate words, {cluster name: feature direction}, {kind: [names]})."""
    kv = words.load_glove()
    pool = calibration_items()
    clusters = {f"{kind}{i}": pool[kind][i] for plan in PLAN.values() for kind, n in plan.items() for i in range(n)}
    vocab = lexical_vocab(kv)
    seen = set(vocab)
    for ws in clusters.values():
        vocab += [w for w in ws if w not in seen and not seen.add(w)]
    model, tok = lexical_model(kv, vocab)
    rng = np.random.default_rng(1)
    emb = model.get_input_embeddings().weight
    index = {w: i for i, w in enumerate(vocab)}
    feats = {}
    with torch.no_grad():
        for name, ws in clusters.items():
            f = torch.tensor(rng.normal(size=emb.shape[1]), dtype=emb.dtype)
            feats[name] = f / f.norm()
            for w in ws:
                emb[index[w]] += 1.5 * feats[name]
    names = {plan: [f"{k}{i}" for k, n in kinds.items() for i in range(n)] for plan, kinds in PLAN.items()}
    return model, tok, vocab[4:], feats, names, HeuristicAnnotator(glove=kv)


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


def annotated(lexical, plans: tuple[str, ...]):
    """Plant the clusters of ``plans`` in every layer of a copy of the weights; probe; annotate."""
    model, tok, vocab, feats, names, annotator = lexical
    m = copy.deepcopy(model)
    targets = [feats[n] for plan in plans for n in names[plan]]
    with torch.no_grad():
        for layer in m.model.layers:
            down = layer.mlp.down_proj.weight  # (d_model, d_mlp): W_out is its transpose
            down.copy_(rotate_onto(down.t(), targets).t())
    res = ffn.ffn_components(WeightViews(m), tok, vocab, ffn.FfnConfig(n_components=64, top_k=50))
    return annotator.annotate(concepts.components_of(res), 1)


@pytest.fixture(scope="module")
def base(lexical):
    return annotated(lexical, BASE)


def test_planted_rotation_reproduces_its_words(lexical):
    model, tok, vocab, feats, names, _ = lexical
    rhyme = names["phonology"][0]
    W = model.model.layers[0].mlp.down_proj.weight.t()
    W2 = rotate_onto(W, [feats[rhyme]])
    ratio, V = ffn.principal_directions(ffn.centre_columns(W2.double()), 64)
    ratio0, _ = ffn.principal_directions(ffn.centre_columns(W.double()), 64)
    torch.testing.assert_close(ratio, ratio0)  # same spectrum: only directions moved
    E, _ = ffn.word_vectors_for(WeightViews(model), tok, vocab)
    idx, _ = ffn.top_words(V[-1:], E.double(), 15)
    top = {vocab[i] for i in idx[0]}
    assert len(top & set(calibration_items()["phonology"][0])) >= 10, top


def test_base_against_itself_neither_passes(base):
    same = concepts.linguistic_unchanged(base, base, 3.0, 0.05, SOURCE)
    rise = concepts.user_task_rise(base, base, 0.05, SOURCE)
    assert same.outcome == "inconclusive", same.obtained  # ~100 components cannot show ±3 pp
    assert rise.outcome == "fail", rise.obtained


def test_planted_rhymes_fail_unchanged_naming_phonology(lexical, base):
    tuned = annotated(lexical, BASE + ("phonology",))
    same = concepts.linguistic_unchanged(base, base, 3.0, 0.05, SOURCE)
    v = concepts.linguistic_unchanged(base, tuned, 3.0, 0.05, SOURCE)
    assert v.outcome == "fail", v.obtained
    assert "phonology changed" in v.reason and "wholly outside" in v.reason
    rows = {r["category"]: r for r in v.numbers["rows"]}
    assert rows["phonology"]["low"] > 3.0 and same.outcome != v.outcome


def test_translation_rotated_into_maths_raises_the_user_task_share(lexical, base):
    tuned = annotated(lexical, ("topic", "math"))
    v = concepts.user_task_rise(base, tuned, 0.05, SOURCE)
    assert v.outcome == "pass", v.obtained
    rows = {r.category: r for r in concepts.compare(base, tuned, "scenario", concepts.SCENARIOS)}
    assert rows["math"].tuned_mean - rows["math"].base_mean > 10.0, concepts.table(rows.values())
