"""Finding 3 through the plugin (pytester, black box): replayed annotated TSVs that pass and fail,
the toy-scale skip of the embedded world, the no-endpoint skip, and the report's FFN section."""

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


def labels(path: Path, levels: dict[str, int], scenario: str = "daily writing") -> Path:
    anns = [Annotation(0, i + 1, ("a", "b"), "Cannot Tell") for i in range(10)]
    for level, n in levels.items():
        anns += [Annotation(1, len(anns) + 1, ("c", "d"), "thing", scenario, level) for _ in range(n)]
    return write_annotations([anns], path, "M", "1B")


MIX = {"Semantic": 60, "Morphology": 20, "Phonology": 10, "Syntax": 10}


def test_replayed_equal_labels_pass(suite):
    a = labels(suite.path / "a.tsv", MIX)
    r = suite.runpytest("--replay-ffn-base", str(a), "--replay-ffn-tuned", str(a), "-p", "no:cacheprovider")
    r.assert_outcomes(passed=2)
    md = (suite.path / "shiftcheck-report" / "report.md").read_text()
    assert "## Finding 3: FFN concepts" in md and "| semantic | 60.0" in md


def test_replayed_phonology_shift_fails_with_the_table(suite):
    a = labels(suite.path / "a.tsv", MIX)
    b = labels(suite.path / "b.tsv", dict(MIX, Semantic=40, Phonology=30))
    r = suite.runpytest("--replay-ffn-base", str(a), "--replay-ffn-tuned", str(b), "-p", "no:cacheprovider")
    r.assert_outcomes(passed=1, failed=1)
    out = r.stdout.str()
    assert "NOT SHOWN" in out and "phonology | 10.0 ± 0.0 | 30.0 ± 0.0 | +20.0" in out


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
