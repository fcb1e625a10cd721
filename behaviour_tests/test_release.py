"""The release gate (issue 21, docs/RELEASE.md): no regression against the last vetted run.

With ``--baseline RUN/results.json`` each shift finding (finding 1's density, finding 2, the
user-task rise) must be non-inferior to the baseline's effect: the null ``effect <= (1 - m) x
baseline`` is rejected one-sided at ``--alpha`` (relative margin m, 0.25 by default). Finding 1 is
paired per prompt over the prompts both runs share; findings 2 and 3 compare their group statistic
with its standard error. "Unchanged" keeps its own test. Without --baseline these tests skip.

With ``--release ARTIFACT`` the artifact must behave like ``--tuned`` (test_release_matches_its_source).
"""

from __future__ import annotations

import pytest

from shiftcheck.fixtures.release import RELEASE_CHECKS
from shiftcheck.probes.release.baseline import REGRESSION_FINDINGS


@pytest.mark.parametrize("finding", REGRESSION_FINDINGS)
def test_no_regression_against_baseline(finding, release_baseline, shiftcheck_settings, request, shiftcheck_expect):
    from shiftcheck.fixtures.release import regression_verdict

    shiftcheck_expect(regression_verdict(finding, release_baseline, request, shiftcheck_settings))


@pytest.mark.parametrize("check", RELEASE_CHECKS)
def test_release_matches_its_source(check, release_pair, shiftcheck_settings, request, shiftcheck_expect):
    """--release ARTIFACT behaves like --tuned: same tokenizer and chat template; KL(source ||
    artifact) under 1e-2 nats/token; finding 1's per-prompt density on the source's responses
    equivalent (TOST, ±0.05) with the greedy agreement reported; finding 2's per-head pair-list Jaccard, 10 % quantile >= 0.7 (the
    world, 2 layers, skips as toy scale); finding 3's top-R FFN subspaces, mean cos² of the principal
    angles >= 0.99 in every layer (docs/RELEASE.md). Without --release these tests skip."""
    from shiftcheck.fixtures.release import release_verdict

    shiftcheck_expect(release_verdict(check, release_pair, request, shiftcheck_settings))
