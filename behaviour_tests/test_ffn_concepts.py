"""Finding 3 (Wu et al. 2023, §5, Tables 4-5, Figures 3 and 8): instruction tuning rotates FFN
knowledge toward user tasks while the linguistic-level mix of the concepts stays unchanged.

Concepts are the principal components of each layer's down-projection (METHODS §3.1), shown to an
annotator as their top 15 words (§3.2-3.3); labels and percentages follow §3.4. The unit of
evidence is the explainable component (and, with several annotation seeds, the seed as well).
The annotator is ``--annotator`` (heuristic by default); annotators run here must pass calibration
(``probes/ffn/annotators/calibration.py``) or both verdicts are inconclusive; replayed labels are
not calibrated here and say so. alpha comes from ``--alpha`` (0.05), the equivalence margin from
``--ffn-tolerance`` (3 pp). docs/FFN.md states each verdict's test.
"""

from __future__ import annotations

import pytest

from shiftcheck.probes.ffn.concepts import linguistic_unchanged, user_task_rise

pytestmark = pytest.mark.xdist_group("ffn")


def test_linguistic_level_mix_unchanged_after_tuning(ffn_labels, ffn_tolerance, shiftcheck_alpha,
                                                     shiftcheck_expect):
    """Table 5 (linguistic levels): equivalence. Two one-sided tests per level against ±margin;
    pass when every level's (1 - 2 alpha) interval lies inside the margin, fail when one lies
    wholly outside, otherwise inconclusive."""
    shiftcheck_expect(linguistic_unchanged(ffn_labels.base, ffn_labels.tuned, ffn_tolerance, shiftcheck_alpha,
                                           ffn_labels.source()))


def test_user_task_concepts_rise_after_tuning(ffn_labels, shiftcheck_alpha, shiftcheck_expect):
    """Table 5 (scenarios): the share of components labelled writing, math or coding (any of them,
    once per component) is higher after tuning: one-sided test at alpha; no rise fails."""
    shiftcheck_expect(user_task_rise(ffn_labels.base, ffn_labels.tuned, shiftcheck_alpha, ffn_labels.source()))
