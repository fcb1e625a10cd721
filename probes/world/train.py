"""Training loop of the miniature world: model init, batching, AdamW with warm-up and cosine decay.

Determinism: weights are initialised inside ``torch.random.fork_rng`` from a fixed seed (the
caller's global RNG state is restored afterwards); batches come from a ``np.random.Generator``;
there is no dropout. With a fixed thread count (set by :func:`deterministic_torch`) the same seed
gives bit-identical weights on the same machine and torch build.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from transformers import LlamaConfig, LlamaForCausalLM

IGNORE = -100  # label id that HF causal-LM loss skips

# One training example: token ids (BOS first, EOS last) and a 0/1 mask of positions with loss.
Example = tuple[list[int], list[int]]
SampleFn = Callable[[np.random.Generator], Example]


@dataclass(frozen=True)
class TrainConfig:
    steps: int
    batch_size: int
    lr: float
    warmup: int
    weight_decay: float = 0.01
    min_lr_ratio: float = 0.1  # cosine decays to lr * min_lr_ratio
    grad_clip: float = 1.0


@contextlib.contextmanager
def deterministic_torch(num_threads: int) -> Iterator[None]:
    """Fix the CPU thread count and turn on deterministic algorithms; restore both on exit."""
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    torch.set_num_threads(num_threads)
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)


def init_model(config: LlamaConfig, seed: int) -> LlamaForCausalLM:
    """A freshly initialised model; the global torch RNG state is left untouched."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.float()


def collate(examples: list[Example], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad to the longest example: input ids ``(batch seq)`` and labels ``(batch seq)``.

    Right padding needs no attention mask under causal attention: real tokens never see the pads,
    and pad positions carry label ``IGNORE``.
    """
    width = max(len(ids) for ids, _ in examples)
    input_ids = torch.full((len(examples), width), pad_id, dtype=torch.long)
    labels = torch.full((len(examples), width), IGNORE, dtype=torch.long)
    for row, (ids, mask) in enumerate(examples):
        t = torch.tensor(ids, dtype=torch.long)
        input_ids[row, : len(ids)] = t
        labels[row, : len(ids)] = torch.where(torch.tensor(mask, dtype=torch.bool), t, IGNORE)
    return input_ids, labels


def lr_at(step: int, cfg: TrainConfig) -> float:
    """Linear warm-up over ``cfg.warmup`` steps, then cosine decay to ``lr * min_lr_ratio``."""
    if step < cfg.warmup:
        return cfg.lr * (step + 1) / cfg.warmup
    progress = (step - cfg.warmup) / max(1, cfg.steps - cfg.warmup)
    floor = cfg.lr * cfg.min_lr_ratio
    return floor + 0.5 * (cfg.lr - floor) * (1.0 + math.cos(math.pi * progress))


def train(model: LlamaForCausalLM, sample: SampleFn, cfg: TrainConfig, rng: np.random.Generator,
          pad_id: int, progress: Callable[[int, float], None] | None = None) -> list[float]:
    """Train ``model`` in place for ``cfg.steps`` AdamW steps; returns the loss of every step.

    ``sample(rng)`` yields one example; a batch is ``cfg.batch_size`` consecutive draws.
    ``progress(step, loss)`` is called every 100 steps and at the end.
    """
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, betas=(0.9, 0.98), eps=1e-8, foreach=False,
    )
    losses: list[float] = []
    for step in range(cfg.steps):
        for group in opt.param_groups:
            group["lr"] = lr_at(step, cfg)
        input_ids, labels = collate([sample(rng) for _ in range(cfg.batch_size)], pad_id)
        loss = model(input_ids=input_ids, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        losses.append(float(loss.detach()))
        if progress is not None and ((step + 1) % 100 == 0 or step + 1 == cfg.steps):
            progress(step + 1, float(np.mean(losses[-100:])))
    model.eval()
    return losses


@torch.no_grad()
def greedy_responses(model: LlamaForCausalLM, prompts: list[list[int]], eos_id: int,
                     max_new_tokens: int) -> list[list[int]]:
    """Greedy continuation of each prompt (ids with BOS), without EOS; prompts of equal length
    are decoded together, so no padding is involved and the result equals one-by-one decoding."""
    model.eval()
    out: list[list[int] | None] = [None] * len(prompts)
    by_len: dict[int, list[int]] = {}
    for i, ids in enumerate(prompts):
        by_len.setdefault(len(ids), []).append(i)
    for idx in by_len.values():
        seq = torch.tensor([prompts[i] for i in idx], dtype=torch.long)  # (batch prompt_len)
        done = torch.zeros(len(idx), dtype=torch.bool)
        gen: list[list[int]] = [[] for _ in idx]
        for _ in range(max_new_tokens):
            nxt = model(input_ids=seq).logits[:, -1, :].argmax(-1)  # (batch)
            for row, token in enumerate(nxt.tolist()):
                if not done[row]:
                    if token == eos_id:
                        done[row] = True
                    else:
                        gen[row].append(token)
            if bool(done.all()):
                break
            seq = torch.cat([seq, nxt[:, None]], dim=1)
        for row, i in enumerate(idx):
            out[i] = gen[row]
    return [o if o is not None else [] for o in out]
