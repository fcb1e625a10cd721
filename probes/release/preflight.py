"""The KL preflight on a resolved pair: the probe as the runner plans it, and its result read back.

``kl_probe`` builds :class:`~shiftcheck.probes.release.kl.KLProbe` for a
:class:`~shiftcheck.probes.runner.PairRunner` (reference = its tuned checkpoint), so the pytest
plugin and ``shiftcheck kl`` share cache entries; ``kl_of_pair`` runs it (tuned first, then base,
one model resident at a time) and returns KL(tuned || base). ``identical_gate`` is the runner's
:class:`~shiftcheck.probes.runner.Gate` for the plan: when the base's KL units (run first on the
base) say that the two files behave identically, the base's units of the probes that only serve
shift findings (finding 1's attribution, finding 2's pair lists) are not computed.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from shiftcheck.probes.prompts import Prompt
from shiftcheck.probes.release.kl import IDENTICAL_KL, TOP_K, KLProbe, KLResult


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


# The planned probes whose base units serve only findings that claim a shift (finding 1's density,
# finding 2): a pair that behaves identically fails those at setup, so their base units are moot.
# FFN (finding 3) is not here: "unchanged" is still judged, and the user-task rise shares its probe.
SHIFT_ONLY_PROBES = ("importance", "attention")


def identical_message(result: KLResult, threshold: float = IDENTICAL_KL) -> str:
    """Why a pair of different files fails its shift findings: they behave identically."""
    row = result.pooled
    return (f"base and tuned behave identically: mean per-token KL(tuned || base) = {row.mean_kl:.2e} nats over "
            f"{row.n_tokens} response tokens of {row.n_prompts} prompts, under {threshold:g}, although the two "
            "checkpoints are different files; check that --tuned is the tuned checkpoint and not a copy or "
            "conversion of --base")


def identical_gate(probe_name: str = "kl", skips: Sequence[str] = SHIFT_ONLY_PROBES,
                   threshold: float = IDENTICAL_KL):
    """The runner's gate on the KL probe named ``probe_name`` (planned only for two different
    files): under ``threshold`` the base's units of ``skips`` are not computed, and the reason is
    :func:`identical_message`."""
    from shiftcheck.probes.runner import Gate

    def verdict(result: KLResult | None) -> str | None:
        if result is None or not result.identical(threshold):
            return None
        return identical_message(result, threshold)

    return Gate(probe_name, frozenset(skips), verdict)
