"""A lexical base model for findings 2 and 3: a tiny Llama whose word vectors carry real semantics.

Word-level tokenizer over alphabetic ShareGPT candidates that GloVe knows, plus every instruction
verb and some control verbs; input (and, tied, output) embeddings initialised from GloVe 6B-50d,
projected to ``d_model`` by a seeded random map, so METHODS §2.1/§3.2 word vectors have GloVe
structure. Attention and MLP weights are random (seeded). Nothing is trained: the tests plant
edits with a known truth on top of it (finding 2: W_Q/W_K; finding 3: FFN directions).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from shiftcheck.probes import words
from shiftcheck.probes.world.tokenizer import build_tokenizer

SPECIALS = ("<unk>", "<s>", "</s>", "<pad>")


def lexical_vocab(kv, n_candidates: int = 3000, n_control: int = 500) -> list[str]:
    """Specials, then alphabetic lower-case candidates GloVe knows (in list order), then the
    instruction verbs and the first ``n_control`` control verbs not already present."""
    seen: dict[str, None] = {s: None for s in SPECIALS}
    for w in words.candidate_words().words:
        if len(seen) - len(SPECIALS) >= n_candidates:
            break
        if w.isalpha() and w.islower() and w in kv.key_to_index:
            seen.setdefault(w, None)
    for w in words.instruction_verbs().words:
        seen.setdefault(w, None)
    for w in words.control_verbs().words[:n_control]:
        if w.isalpha():
            seen.setdefault(w, None)
    return list(seen)


def lexical_model(kv, vocab: list[str], d_model: int = 64, n_layers: int = 4, n_heads: int = 4,
                  n_kv_heads: int = 2, d_mlp: int = 128, seed: int = 0):
    """``(model, tokenizer)``: the lexical base, built in memory (float32, eval mode)."""
    tokenizer = build_tokenizer(vocab)
    config = LlamaConfig(vocab_size=len(vocab), hidden_size=d_model, intermediate_size=d_mlp,
                         num_hidden_layers=n_layers, num_attention_heads=n_heads, num_key_value_heads=n_kv_heads,
                         max_position_embeddings=64, tie_word_embeddings=True, bos_token_id=1, eos_token_id=2,
                         pad_token_id=3)
    rng = np.random.default_rng(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config).float().eval()
    glove = words.glove_matrix(kv, vocab)  # (n_words, 50), zero rows for specials
    proj = rng.normal(0.0, 1.0 / np.sqrt(glove.shape[1]), size=(glove.shape[1], d_model))
    emb = glove @ proj + rng.normal(0.0, 0.02, size=(len(vocab), d_model))
    with torch.no_grad():
        model.get_input_embeddings().weight.copy_(torch.tensor(emb, dtype=torch.float32))
    return model, tokenizer


def save_lexical(model, tokenizer, out: Path) -> Path:
    out = Path(out)
    model.save_pretrained(out, safe_serialization=True)
    tokenizer.save_pretrained(out)
    return out


def add_noise(model, norm: float, seed: int = 0) -> None:
    """A random perturbation of Frobenius norm ``norm`` spread over every layer's W_Q and W_K."""
    gen = torch.Generator().manual_seed(seed)
    params = [p for layer in model.model.layers for p in (layer.self_attn.q_proj.weight, layer.self_attn.k_proj.weight)]
    noise = [torch.randn(p.shape, generator=gen) for p in params]
    total = torch.sqrt(sum((n**2).sum() for n in noise))
    with torch.no_grad():
        for p, n in zip(params, noise):
            p.add_(n * (norm / total))


def plant_verb_relations(model, tokenizer, kv, layer: int = 0, per_group: int = 5, scale: float = 4.0,
                         seed: int = 0, verbs: list[str] | None = None, kv_heads: list[int] | None = None,
                         not_keys: frozenset[str] = frozenset(), avoid: "torch.Tensor | None" = None) -> float:
    """Finding 2's planted truth: in every head of ``layer``, pairs of query/key dimensions are set so
    that a small group of instruction verbs are the query words and their GloVe neighbours the key
    words (two dimensions per group, so each pair is seen twice: §2.5 keeps pairs counted >= 2).
    By default every instruction verb of the vocabulary gets such a group in every head; ``verbs``
    and ``kv_heads`` restrict the plant to those verbs and to the query heads of those key/value
    heads; words in ``not_keys`` are never chosen as key neighbours. ``avoid`` (orthonormal rows in
    embedding space, see :func:`verb_subspace`) is projected out of the query direction, so the
    plant does not also raise every word that merely looks like a verb. Returns the Frobenius norm
    of the edit."""
    from shiftcheck.probes.models.architectures import WeightViews

    views = WeightViews(model)
    vocab = tokenizer.get_vocab()
    verbs = [v for v in (verbs if verbs is not None else words.instruction_verbs().words) if v in vocab]
    names = [w for w, _ in sorted(vocab.items(), key=lambda x: x[1])]
    E = model.get_input_embeddings().weight.detach().double()
    G = torch.tensor(words.glove_matrix(kv, names), dtype=torch.float64)
    attn = model.model.layers[layer].self_attn
    g = views.attn_norm_gain(layer).detach().double()
    d_head, n_heads, n_kv = views.d_head, views.n_heads, views.n_kv_heads
    groups = [verbs[i : i + per_group] for i in range(0, len(verbs), per_group)]
    if 2 * len(groups) > d_head:
        raise ValueError(f"{len(groups)} verb groups need {2 * len(groups)} dimensions; heads have {d_head}")
    excluded = torch.tensor([vocab[w] for w in not_keys if w in vocab], dtype=torch.long)
    rng = np.random.default_rng(seed)
    before = [attn.q_proj.weight.detach().clone(), attn.k_proj.weight.detach().clone()]
    per_kv = n_heads // n_kv
    with torch.no_grad():
        for kvh in range(n_kv):
            dims = rng.permutation(d_head)  # drawn for every kv head: the same seed plants the same dims
            if kv_heads is not None and kvh not in kv_heads:
                continue
            for k, group in enumerate(groups):
                ids = torch.tensor([vocab[v] for v in group])
                sims = G[ids] @ G.T
                sims[:, ids] = -1
                sims[:, :4] = -1  # never the special tokens
                sims[:, excluded] = -1
                neighbours = sims.topk(4, dim=1).indices.flatten().unique()
                q_dir, k_dir = E[ids].mean(0), E[neighbours].mean(0)
                if avoid is not None:
                    q_dir = q_dir - avoid.T @ (avoid @ q_dir)
                for d in dims[2 * k : 2 * k + 2]:  # one neuron = the same dimension of a query head and its kv head
                    attn.k_proj.weight[kvh * d_head + d] = (scale * k_dir / k_dir.norm() / g).float()
                    for h in range(kvh * per_kv, (kvh + 1) * per_kv):
                        attn.q_proj.weight[h * d_head + d] = (scale * q_dir / q_dir.norm() / g).float()
        delta = ((attn.q_proj.weight - before[0]) ** 2).sum() + ((attn.k_proj.weight - before[1]) ** 2).sum()
    return float(delta.sqrt())


# ---------------------------------------------------------------------------------------------
# finding 2 with support: a base with enough head clusters, and pair lists computed fast

BIG = {"d_model": 256, "n_layers": 8, "n_heads": 16, "n_kv_heads": 8, "d_mlp": 64}  # g0 = layers 0-1: 16 clusters


def verb_subspace(model, tokenizer, verbs: list[str], k: int) -> torch.Tensor:
    """The top ``k`` right singular vectors (uncentred) of ``verbs``' input embeddings, as rows: the
    directions that all verbs share, which a specific plant leaves out of its query direction."""
    vocab = tokenizer.get_vocab()
    E = model.get_input_embeddings().weight.detach().double()
    rows = E[[vocab[v] for v in verbs if v in vocab]]
    return torch.linalg.svd(rows, full_matrices=False).Vh[:k]


def add_layer_noise(model, layers: list[int], rel: float, seed: int) -> None:
    """Gaussian noise on W_Q/W_K of ``layers``, ``rel`` times each matrix's RMS entry (the SmolLM2
    measurement's construction, PROBE_NOTES)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in layers:
            attn = model.model.layers[layer].self_attn
            for p in (attn.q_proj.weight, attn.k_proj.weight):
                p.add_(torch.randn(p.shape, generator=gen) * rel * p.pow(2).mean().sqrt())


def plant_random_heads(model, tokenizer, kv, verbs: list[str], layers: list[int], p_head: float, seed: int,
                       scale: float = 4.0, not_keys: frozenset[str] = frozenset(),
                       avoid: torch.Tensor | None = None) -> None:
    """Each verb of ``verbs`` planted (as :func:`plant_verb_relations` does) in a random subset of the
    key/value heads of ``layers``: each (layer, kv head) takes each verb with probability ``p_head``."""
    from shiftcheck.probes.models.architectures import WeightViews

    n_kv = WeightViews(model).n_kv_heads
    rng = np.random.default_rng(seed)
    for layer in layers:
        for kvh in range(n_kv):
            chosen = [v for v in verbs if rng.random() < p_head]
            if chosen:
                plant_verb_relations(model, tokenizer, kv, layer=layer, scale=scale, seed=int(rng.integers(1 << 30)),
                                     verbs=chosen, kv_heads=[kvh], not_keys=not_keys, avoid=avoid)


def plant_split_per_head(base, tuned, tokenizer, kv, verbs: list[str], layers: list[int], p_head: float, seed: int,
                         scale: float = 4.0, not_keys: frozenset[str] = frozenset(),
                         avoid: torch.Tensor | None = None) -> None:
    """A null with no direction for any verb: each (layer, kv head) splits ``verbs`` at random into two
    halves, one half goes into ``base``, the other into ``tuned`` (each verb of its half with
    probability ``p_head``). A fresh split per head means every verb is planted on the base side in
    about half of its heads, so no verb and no half of the verbs gains on average."""
    from shiftcheck.probes.models.architectures import WeightViews

    n_kv = WeightViews(base).n_kv_heads
    rng = np.random.default_rng(seed)
    for layer in layers:
        for kvh in range(n_kv):
            perm = list(rng.permutation(verbs))
            for model, half in ((base, perm[: len(perm) // 2]), (tuned, perm[len(perm) // 2 :])):
                chosen = [v for v in half if rng.random() < p_head]
                if chosen:
                    plant_verb_relations(model, tokenizer, kv, layer=layer, scale=scale,
                                         seed=int(rng.integers(1 << 30)), verbs=chosen, kv_heads=[kvh],
                                         not_keys=not_keys, avoid=avoid)


class PairLister:
    """Head-level pair lists of many edits of one lexical base. The word vectors and GloVe thresholds
    do not depend on W_Q/W_K, so they are computed once; candidates without tokens never take part
    in a pair (§2.4), so the word space keeps only the ~3000 with tokens, with θ from the full list."""

    def __init__(self, tokenizer, kv, model):
        from shiftcheck.probes import attention as at
        from shiftcheck.probes.models.architectures import WeightViews

        candidates = words.candidate_words()
        self.config = at.AttentionConfig()
        full = at.word_space(candidates, kv, self.config, "glove-6b-50d")
        E_w, has = at.word_vectors(WeightViews(model), tokenizer, candidates)
        keep = np.flatnonzero(has)
        names = tuple(candidates.words[i] for i in keep)
        first: dict[str, int] = {}
        lower_id = np.array([first.setdefault(w.lower(), i) for i, w in enumerate(names)], dtype=np.int64)
        self.ws = at.WordSpace(words.WordList(candidates.name, names, candidates.source), lower_id,
                               full.G[keep], full.theta[keep], full.glove_source)
        self.E_w, self.has_tokens = E_w[keep], np.ones(len(keep), bool)

    def result(self, model, layers: list[int], label: str = "x"):
        from shiftcheck.probes import attention as at
        from shiftcheck.probes.models.architectures import WeightViews

        views = WeightViews(model)
        pairs = at.head_pair_lists(views, self.E_w, self.has_tokens, self.ws, layers, self.config)
        return at.AttentionResult(label, views.n_layers, views.n_heads, tuple(self.ws.lower), 0, pairs, {},
                                  views.n_kv_heads)
