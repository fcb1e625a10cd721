"""Finding 3 through the plugin (pytester, black box): replayed annotated TSVs that pass, fail and
are inconclusive, the toy-scale skip of the embedded world, the no-endpoint skip, and the report's
FFN section as valid Markdown."""

from __future__ import annotations

import shutil
from pathlib import Path

import matplotlib.pyplot  # noqa: F401  imported before pytester's in-process runs snapshot sys.modules:
import pytest
import scipy.stats  # noqa: F401  numpy's C extensions cannot be imported twice in one process

from shiftcheck.probes import ffn  # noqa: F401
from shiftcheck.probes.ffn import concepts  # noqa: F401
from shiftcheck.probes.ffn.annotators import Annotation
from shiftcheck.probes.ffn.annotators.replay import write_annotations

pytest_plugins = ["pytester"]
BEHAVIOUR = Path(__file__).resolve().parents[1] / "behaviour_tests" / "test_ffn_concepts.py"


@pytest.fixture
def suite(pytester: pytest.Pytester, tmp_path_factory) -> pytest.Pytester:
    shutil.copy(BEHAVIOUR, pytester.path / BEHAVIOUR.name)
    pytester.makeini("[pytest]\n")
    pytester._monkeypatch.setenv("SHIFTCHECK_CACHE", str(tmp_path_factory.mktemp("cache")))
    return pytester


def labels(path: Path, levels: dict[str, int], scenario: str = "daily writing", user: int | None = None) -> Path:
    """One repetition: 10 unexplainable components, then ``levels``; the first ``user`` explainable
    ones (all by default) carry ``scenario``, the rest translation."""
    anns = [Annotation(0, i + 1, ("a", "b"), "Cannot Tell") for i in range(10)]
    k = 0
    for level, n in levels.items():
        for _ in range(n):
            scen = scenario if user is None or k < user else "translation"
            # ranks stay <= 300 (the replay keeps Rank <= --ffn-components): 32 layers
            anns.append(Annotation(k % 32, 11 + k // 32, ("c", "d|e"), "thing", scen, level))
            k += 1
    return write_annotations([anns], path, "M", "1B")


def mix(n: int) -> dict[str, int]:
    return {"Semantic": n * 6 // 10, "Morphology": n * 2 // 10, "Phonology": n // 10, "Syntax": n // 10}


def _md_tables(md: str) -> list:
    """Every table of the report, parsed by markdown-it (a malformed table is not a table)."""
    from markdown_it import MarkdownIt

    return [t for t in MarkdownIt().enable("table").parse(md) if t.type == "table_open"]


def test_replayed_equal_labels_on_many_components_pass_unchanged_and_fail_the_rise(suite):
    a = labels(suite.path / "a.tsv", mix(3000))
    r = suite.runpytest("--replay-ffn-base", str(a), "--replay-ffn-tuned", str(a), "-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, failed=1)
    out = r.stdout.str()
    assert "user_task_concepts_rise_after_tuning" in out and "no significant rise" in out
    md = (suite.path / "shiftcheck-report" / "report.md").read_text()
    assert "## Finding 3: FFN concepts" in md and "| semantic | 60.00 | 60.00 | +0.00 |" in md
    assert "not calibrated here" in md
    section = md[md.index("## Finding 3"):]
    assert len(_md_tables(section)) >= 5  # calibration note, equivalence, user tasks, 2 x Table 5, layers


def test_forty_replayed_components_a_side_are_inconclusive_not_a_pass(suite):
    a = labels(suite.path / "a.tsv", mix(40))
    r = suite.runpytest("--replay-ffn-base", str(a), "--replay-ffn-tuned", str(a), "-p", "no:cacheprovider")
    r.assert_outcomes(failed=2)
    assert "inconclusive" in r.stdout.str() and "not shown equivalent" in r.stdout.str()
    r = suite.runpytest("--replay-ffn-base", str(a), "--replay-ffn-tuned", str(a), "--allow-inconclusive",
                        "-p", "no:cacheprovider")
    r.assert_outcomes(skipped=1, failed=1)  # inconclusive is a skip then; the rise still fails: nothing rose


def test_replayed_phonology_shift_fails_and_a_rise_passes(suite):
    a = labels(suite.path / "a.tsv", mix(1000), user=500)
    b = labels(suite.path / "b.tsv", dict(mix(1000), Semantic=400, Phonology=300), user=600)
    r = suite.runpytest("--replay-ffn-base", str(a), "--replay-ffn-tuned", str(b), "-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, failed=1)
    out = r.stdout.str()
    assert "phonology changed +20.00 pp" in out and "wholly outside" in out


def test_embedded_world_skips_quickly_as_toy_scale(suite):
    r = suite.runpytest("-rs", "-p", "no:cacheprovider")
    r.assert_outcomes(skipped=2)
    assert "toy scale: the embedded world" in r.stdout.str()
    assert "toy scale" in (suite.path / "shiftcheck-report" / "report.md").read_text()


def test_openai_annotator_without_key_or_cache_skips(suite, tmp_path):
    from builders import tiny_llama

    ckpt = tiny_llama(tmp_path, name="m")
    suite._monkeypatch.delenv("SHIFTCHECK_NO_KEY", raising=False)
    r = suite.runpytest("--base", str(ckpt), "--tuned", str(ckpt), "--ffn-components", "8",
                        "--annotator", "openai:some-model", "--annotator-api-key-env", "SHIFTCHECK_NO_KEY",
                        "--candidate-words", str(_words(tmp_path)), "-rs", "-p", "no:cacheprovider")
    r.assert_outcomes(skipped=2)
    assert "no endpoint configured ($SHIFTCHECK_NO_KEY is not set)" in r.stdout.str()


def _words(tmp_path: Path) -> Path:
    from builders import DEFAULT_WORDS

    p = tmp_path / "words.tsv"
    p.write_text("word\n" + "\n".join(DEFAULT_WORDS * 1) + "\n")
    return p


def test_an_annotator_that_cannot_be_calibrated_counts_as_failed():
    """A cache-only endpoint without the calibration answers: both verdicts become inconclusive."""
    from shiftcheck.fixtures.ffn import FfnLabels, calibration_of
    from shiftcheck.probes.ffn.annotators import AnnotatorError

    class Offline:
        name = "openai:m@http://127.0.0.1:9"

        def annotate(self, components, repetitions):
            raise AnnotatorError("no cached answer and no endpoint")

    cal = calibration_of(Offline())
    assert not cal.passed and "no cached answer" in cal.reason
    reps = [[Annotation(0, i + 1, ("w",), "x", "coding", "Semantic") for i in range(3000)]]
    src = FfnLabels(reps, reps, Offline.name, "models", calibration=cal).source()
    v = concepts.linguistic_unchanged(reps, reps, 3.0, 0.05, src)
    assert v.outcome == "inconclusive" and "failed calibration" in v.reason
