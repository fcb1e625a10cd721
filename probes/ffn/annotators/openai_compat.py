"""Annotator on any OpenAI-compatible chat-completions endpoint (the real ``openai`` client).

* ``base_url`` any endpoint; the API key is read from the environment variable named by
  ``api_key_env`` and is only ever handed to the client (never cached, logged or reported).
* Bounded concurrency (a thread pool of ``concurrency``), retry with exponential backoff on 429,
  5xx, timeouts and connection errors (the client's own retries are off, so the count is ours).
* Every answer goes to the sqlite :class:`AnswerCache` as it arrives.
* Before the first call, the number of calls and an estimated token count are logged.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from shiftcheck.probes.ffn.annotators import (DESCRIBE_PARAMS, Annotation, AnnotatorError, Component, prompts,
                                          three_step)
from shiftcheck.probes.ffn.annotators.cache import AnswerCache, answer_key

CHARS_PER_TOKEN = 4  # rough estimate for the pre-run cost line
DEFAULT_CACHE = "annotator_answers.sqlite"


def default_cache_path() -> Path:
    from shiftcheck.probes.cache import default_cache_dir

    return default_cache_dir() / DEFAULT_CACHE


def _retryable(exc: BaseException) -> bool:
    import openai

    if isinstance(exc, (openai.RateLimitError, openai.InternalServerError, openai.APITimeoutError,
                        openai.APIConnectionError)):
        return True
    return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500


class OpenAIAnnotator:
    """``openai:MODEL`` with the three-step protocol of §3.3."""

    def __init__(self, model: str, base_url: str | None = None, api_key_env: str = "OPENAI_API_KEY",
                 concurrency: int = 4, cache_path: str | Path | None = None, log: Callable[[str], None] | None = None,
                 max_attempts: int = 6, backoff_s: float = 1.0, timeout_s: float = 60.0,
                 cache_only: bool = False) -> None:
        import openai

        key = os.environ.get(api_key_env) or ("cache-only" if cache_only else None)
        if not key:
            raise AnnotatorError(f"openai:{model}: the environment variable {api_key_env} (--annotator-api-key-env) "
                                 "is not set")
        self.model = model
        self.name = f"openai:{model}" + (f"@{base_url}" if base_url else "")
        self._client = openai.OpenAI(api_key=key, base_url=base_url, max_retries=0, timeout=timeout_s)
        self.concurrency = concurrency
        self.cache = AnswerCache(cache_path or default_cache_path())
        self.log = log or (lambda msg: None)
        self.max_attempts = max_attempts
        self.backoff_s = backoff_s
        self.calls = 0  # requests sent in this process (cache misses, retries included)

    def _request(self, messages: list[dict], temperature: float, top_p: float, seed: int) -> str:
        for attempt in range(self.max_attempts):
            try:
                self.calls += 1
                resp = self._client.chat.completions.create(model=self.model, messages=messages,
                                                            temperature=temperature, top_p=top_p, seed=seed)
                return resp.choices[0].message.content or ""
            except Exception as exc:  # noqa: BLE001 - classified below
                if not _retryable(exc) or attempt == self.max_attempts - 1:
                    raise AnnotatorError(f"{self.name}: request failed after {attempt + 1} attempt(s): "
                                         f"{type(exc).__name__}: {exc}") from None
                time.sleep(min(self.backoff_s * 2**attempt, 30.0))
        raise AssertionError("unreachable")

    def chat(self, messages: list[dict], temperature: float, top_p: float, seed: int) -> str:
        params = {"temperature": temperature, "top_p": top_p}
        key = answer_key(self.model, prompts.TEMPLATE_VERSION, messages, params, seed)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        answer = self._request(messages, temperature, top_p, seed)
        self.cache.put(key, self.model, answer)
        return answer

    def has_cached_answers(self) -> bool:
        return self.cache.has_model(self.model)

    def estimate(self, components: Sequence[Component], repetitions: int) -> tuple[int, int, int]:
        """(upper bound of calls, describe calls already cached, estimated tokens of the misses)."""
        total, cached, chars = 0, 0, 0
        for rep in range(repetitions):
            for comp in components:
                msgs = prompts.describe_messages(list(comp.words))
                total += 3
                if self.cache.get(answer_key(self.model, prompts.TEMPLATE_VERSION, msgs, DESCRIBE_PARAMS, rep)):
                    cached += 1
                else:
                    chars += 3 * sum(len(m["content"]) for m in msgs)
        return total, cached, chars // CHARS_PER_TOKEN

    def annotate(self, components: Sequence[Component], repetitions: int) -> list[list[Annotation]]:
        total, cached, tokens = self.estimate(components, repetitions)
        self.log(f"{self.name}: {len(components)} components x {repetitions} repetitions: at most {total} calls "
                 f"({cached} describe answers cached), about {tokens} prompt tokens for the misses")
        jobs = [(rep, i) for rep in range(repetitions) for i in range(len(components))]
        out: list[list[Annotation | None]] = [[None] * len(components) for _ in range(repetitions)]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            futures = {pool.submit(three_step, self.chat, components[i], rep): (rep, i) for rep, i in jobs}
            for fut, (rep, i) in futures.items():
                out[rep][i] = fut.result()
        return [list(row) for row in out]  # type: ignore[arg-type]
