"""Finding 3 (Wu et al. 2023, §5, Tables 4-5, Figures 3 and 8): instruction tuning rotates FFN
knowledge toward user tasks while the linguistic-level mix of the concepts stays unchanged.

Concepts are the principal components of each layer's down-projection (METHODS §3.1), shown to an
annotator as their top 15 words (§3.2-3.3); labels and percentages follow §3.4. The annotator is
``--annotator`` (heuristic by default, named in the report). alpha comes from ``--alpha`` (0.05,
the paper's reading of Table 5); the tolerance from ``--ffn-tolerance`` (3 pp: the largest
per-category change the paper's Table 5 shows for the linguistic levels is within a few points).
"""

from __future__ import annotations

import pytest

from shiftcheck.probes.ffn.concepts import linguistic_unchanged, user_tasks_not_lower

pytestmark = pytest.mark.xdist_group("ffn")


def test_linguistic_level_mix_unchanged_after_tuning(ffn_labels, ffn_tolerance, shiftcheck_alpha,
                                                     shiftcheck_expect):
    """Table 5 (linguistic levels): equivalence — no level's share moves more than the tolerance AND
    no level differs significantly (Student two-sided over repetitions; pooled chi-square with one)."""
    shiftcheck_expect(linguistic_unchanged(ffn_labels.base, ffn_labels.tuned, ffn_tolerance, shiftcheck_alpha,
                                           ffn_labels.annotator))


def test_user_task_concepts_do_not_drop_after_tuning(ffn_labels, ffn_tolerance, shiftcheck_alpha,
                                                     shiftcheck_expect):
    """Table 5 (scenarios): the share of concepts for writing, maths and coding does not drop by more
    than the tolerance (non-inferiority); whether it rises, with its one-sided p, is reported."""
    shiftcheck_expect(user_tasks_not_lower(ffn_labels.base, ffn_labels.tuned, ffn_tolerance, shiftcheck_alpha,
                                           ffn_labels.annotator))
