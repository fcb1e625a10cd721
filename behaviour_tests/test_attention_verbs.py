"""Finding 2 (Wu et al. 2023, §4 and Table 3): instruction tuning gives instruction verbs more
word-word relations in the self-attention heads of the low layers.

Head-level pair lists (METHODS §2.2-2.5) of base and tuned are compared per layer group (§2.6):
for each verb, the share of changed heads in which the tuned model has more pairs. The lowest
group is asserted: the instruction verbs' share is above ``--verb-share-threshold`` (0.5, the
paper's "more than half") and above the control verbs' share with Welch two-sided p < ``--alpha``.
The higher groups are recorded as information. Fewer than ``--min-verb-support`` instruction verbs
with a changed head is inconclusive (fails unless ``--allow-inconclusive``).
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.xdist_group("attention")


def test_instruction_verbs_gain_pairs_in_the_low_layers(attention_pair, layer_group, shiftcheck_settings,
                                                        shiftcheck_expect):
    from shiftcheck.probes import words
    from shiftcheck.probes.attention import verb_verdict

    s = shiftcheck_settings
    verdict = verb_verdict(attention_pair.base, attention_pair.tuned, int(layer_group[1:]),
                           words.instruction_verbs(s.instruction_verbs).words, words.control_verbs(s.control_verbs).words,
                           threshold=s.verb_share_threshold, alpha=s.alpha, min_support=s.min_verb_support)
    shiftcheck_expect(verdict, enforce=layer_group == "g0")  # the paper's claim is about the low layers
