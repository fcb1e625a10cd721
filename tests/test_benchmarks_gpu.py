"""benchmarks/gpu.py runs on a CPU in --smoke mode: its figures come back as JSON with the fields
docs/BENCHMARKS.md reads, and a failing figure records its error without losing the others."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


@pytest.fixture(scope="module")
def gpu():
    spec = importlib.util.spec_from_file_location("bench_gpu", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_smoke_ffn_figure_is_written_as_json(gpu, tmp_path):
    out = tmp_path / "gpu.json"
    gpu.main(["--smoke", "--device", "cpu", "--only", "ffn", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["smoke"] is True and report["device"] == "cpu"
    per_layer = report["ffn"]["seconds_per_layer"]
    assert len(per_layer) == gpu.SHAPES["smoke"]["ffn"][3] and all(t > 0 for t in per_layer)
    assert report["ffn"]["projected_32_layers_s"] == pytest.approx(sum(per_layer) / len(per_layer) * 32)


def test_bf16_storage_halves_the_weights(gpu, capsys):
    for dtype in ("float32", "bfloat16"):
        gpu.bf16_child(dtype, "cpu", gpu.SHAPES["smoke"]["bf16"])
    f32, bf16 = (json.loads(line) for line in capsys.readouterr().out.strip().splitlines())
    assert bf16["weights_mb"] == pytest.approx(f32["weights_mb"] / 2)


def test_a_failing_figure_keeps_the_others(gpu, tmp_path, monkeypatch):
    def broken(args, shape):
        raise RuntimeError("planted failure")

    monkeypatch.setitem(gpu.FIGURES, "attention", broken)
    out = tmp_path / "gpu.json"
    gpu.main(["--smoke", "--device", "cpu", "--only", "attention", "ffn", "--out", str(out)])
    report = json.loads(out.read_text())
    assert report["attention"]["error"] == "RuntimeError: planted failure"
    assert "seconds_per_layer" in report["ffn"]
