"""Finding 2 (Wu et al. 2023, §4 and Table 3): instruction tuning gives instruction verbs more
word-word relations in the self-attention heads of the low layers.

Head-level pair lists (METHODS §2.2-2.5) of base and tuned are compared in the lowest layer group
(§2.6). The unit of evidence is the head cluster (layer, key/value head). A one-sided cluster
bootstrap (seeded) tests, as an intersection-union test, that the instruction verbs' share of
changed heads with more pairs is above ``--verb-share-threshold`` (0.5, the paper's "more than
half") and above the frequency-matched control verbs' share, both at ``--alpha``. Fewer than
``--min-verb-support`` instruction verbs or ``--min-head-support`` head clusters with a change is
inconclusive (fails unless ``--allow-inconclusive``). The paper's Table 3 numbers (Welch over
verbs) and the higher groups are in the report as information, not asserted.
"""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.xdist_group("attention")


def test_instruction_verbs_gain_pairs_in_the_low_layers(attention_pair, shiftcheck_settings, shiftcheck_expect):
    from shiftcheck.probes import words
    from shiftcheck.probes.attention import verb_verdict

    s = shiftcheck_settings
    verdict = verb_verdict(attention_pair.base, attention_pair.tuned, 0,
                           words.instruction_verbs(s.instruction_verbs).words, words.control_verbs(s.control_verbs).words,
                           threshold=s.verb_share_threshold, alpha=s.alpha, min_support=s.min_verb_support,
                           min_head_support=s.min_head_support)
    shiftcheck_expect(verdict)
