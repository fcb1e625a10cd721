"""The KL preflight on a resolved pair: the probe as the runner plans it, and its result read back.

``kl_probe`` builds :class:`~shiftcheck.probes.release.kl.KLProbe` for a
:class:`~shiftcheck.probes.runner.PairRunner` (reference = its tuned checkpoint), so the pytest
plugin and ``shiftcheck kl`` share cache entries; ``kl_of_pair`` runs it (tuned first, then base,
one model resident at a time) and returns KL(tuned || base).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shiftcheck.probes.prompts import Prompt
from shiftcheck.probes.release.kl import TOP_K, KLProbe, KLResult


def kl_probe(runner: Any, prompts: Sequence[Prompt], max_new_tokens: int = 300, chat_template: bool = False,
             dtype: str = "float32", responses_from: Any = None, k: int = TOP_K) -> KLProbe:
    """The preflight for ``runner``'s pair; ``responses_from`` is finding 1's probe when it is planned
    (its tuned entries hold the responses, so none is generated twice)."""
    return KLProbe(tuple(prompts), str(runner.tuned.location), runner.tuned.fingerprint, runner.cache,
                   max_new_tokens=max_new_tokens, chat_template=chat_template, dtype=dtype, k=k,
                   responses_from=responses_from)


def kl_of_pair(runner: Any, probe: KLProbe) -> KLResult:
    """KL(tuned || base) for the pair: planned with the runner's other probes when it is in the plan,
    else run on its own (tuned, then base)."""
    base_run, _ = runner.run(probe)
    result = base_run.result
    return KLResult(runner.tuned.spec, runner.base.spec, result.k, result.prompts)
