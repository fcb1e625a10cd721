"""Finding 1 (Wu et al. 2023, §3.1 and Tables 1-2): instruction tuning makes the model attend to
the instruction words of a prompt.

Importance density (METHODS §1.5-1.6) of the instruction tokens is computed for each model on its
own greedy response and compared per prompt source and pooled. alpha comes from ``--alpha``
(default 0.05, the paper's reading of its Table 2 p-values).
"""

from __future__ import annotations

import pytest

from shiftcheck.probes.findings import density_shift, followed_shift

pytestmark = pytest.mark.xdist_group("importance")


def test_tuned_density_on_instructions_exceeds_base(importance_pair, density_group, shiftcheck_alpha, shiftcheck_expect):
    """Paper Table 2: the tuned model's instruction importance density is higher than the base's
    (Welch one-sided t-test, all instances, no length filter)."""
    shift = density_shift(importance_pair.base, importance_pair.tuned, density_group)
    shiftcheck_expect(shift.verdict(
        "tuned_density_on_instructions_exceeds_base",
        shiftcheck_alpha,
        claim="the tuned model puts more importance density on instruction words than the base",
        hint="check that --tuned really is the instruction-tuned checkpoint and --base its base; "
        "with few prompts, add prompts (--prompts) before changing --alpha",
    ))


def test_followed_responses_carry_more_instruction_density(tuned_ratings, importance_pair, density_group,
                                                           shiftcheck_alpha, shiftcheck_expect):
    """Paper Table 1: among the tuned model's rated responses, followed ones (rating >= 2) show higher
    instruction density than unfollowed ones (rating 1); responses under 5 tokens are dropped."""
    shift = followed_shift(importance_pair.tuned, tuned_ratings, density_group)
    if shift.a_n < 2 or shift.b_n < 2:
        pytest.skip(f"group '{density_group}' has {shift.b_n} followed and {shift.a_n} unfollowed rated responses; "
                    "need at least 2 of each")
    shiftcheck_expect(shift.verdict(
        "followed_responses_carry_more_instruction_density",
        shiftcheck_alpha,
        claim="followed responses carry more instruction density than unfollowed ones",
        hint="check that --ratings rates the same responses the tuned model produced (--ratings-model)",
    ))
