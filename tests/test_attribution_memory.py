"""--attribution-memory: the option's syntax, and the chunk it buys (probes/importance/memory.py):
the rows never exceed the budget when one row fits, more budget never means fewer rows, and a pass
holds the rows the formula says, counted by hand on a planted shape. (Whether the formula bounds the
real peak is measured, not tested: benchmarks/attribution.py prints both, docs/BENCHMARKS.md.)"""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from shiftcheck.fixtures.options import OPTIONS, parse_value
from shiftcheck.probes.importance.memory import (CPU_CAP, PASS_FLOP, RUNTIME, Dims, base_bytes, chunk_for_budget,
                                                 cpu_cap, dims_of, head_bytes, peak_bytes, row_bytes, row_flop)

OPTION = next(o for o in OPTIONS if o.name == "attribution_memory")


@pytest.mark.parametrize("text,expected", [
    ("2GB", 2 * 10**9), ("2G", 2 * 10**9), ("1.5GiB", 3 * 2**29), ("512MB", 512 * 10**6), ("512mib", 512 * 2**20),
    ("512", 512 * 2**20), ("4096B", 4096), (" 3 GB ", 3 * 10**9), ("auto", None), ("AUTO", None)])
def test_memory_sizes_parse_with_decimal_and_binary_units_and_bare_mib(text, expected):
    assert parse_value(OPTION, text, False, Path(".")) == expected


def test_a_toml_integer_is_mib_and_bad_sizes_name_the_option():
    assert parse_value(OPTION, 256, True, Path(".")) == 256 * 2**20
    for bad in ("x", "-1", "0", "2 GBB", "1ib", "0.1b", "two gigabytes"):
        with pytest.raises(pytest.UsageError, match="--attribution-memory must be a size such as 2GB"):
            parse_value(OPTION, bad, False, Path("."))
    with pytest.raises(pytest.UsageError, match=r"\[tool.shiftcheck\] attribution-memory"):
        parse_value(OPTION, True, True, Path("."))


dims = st.builds(Dims, seq_len=st.integers(1, 4096), resp_len=st.integers(1, 512), d_model=st.integers(8, 8192),
                 d_ff=st.integers(8, 32768), n_heads=st.integers(1, 64), n_layers=st.integers(1, 80),
                 vocab=st.integers(16, 256_000))


@settings(max_examples=200, deadline=None)
@given(d=dims, path=st.sampled_from(["vjp", "jvp"]), budget=st.integers(1, 2**40), cap=st.integers(1, 512),
       through_logits=st.booleans())
def test_the_chunk_keeps_the_rows_within_the_budget_whenever_one_row_fits(d, path, budget, cap, through_logits):
    chunk = chunk_for_budget(d, path, budget, cap, through_logits)
    row, base = row_bytes(d, path, through_logits), base_bytes(d, path)
    assert 1 <= chunk <= cap
    if base + row <= budget:
        assert base + chunk * row <= budget
    # one more row would break the budget, unless the cap stopped it
    assert chunk == cap or base + (chunk + 1) * row > budget
    assert chunk_for_budget(d, path, 2 * budget, cap, through_logits) >= chunk
    assert peak_bytes(d, path, chunk, through_logits) == base + max(head_bytes(d), chunk * row)


def test_a_planted_shape_gives_the_rows_counted_by_hand():
    # S = 10, D = 4, F = 8, H = 2 (H S = 20), L = 3, M = 5, V = 100
    d = Dims(seq_len=10, resp_len=5, d_model=4, d_ff=8, n_heads=2, n_layers=3, vocab=100)
    assert row_bytes(d, "vjp") == 4 * 10 * (32 + 32 + 60)
    assert row_bytes(d, "jvp") == 4 * 10 * (80 + 80 + 80)
    assert row_bytes(d, "vjp", through_logits=True) == 4 * 10 * (32 + 32 + 60) + 3 * 4 * 10 * 100
    assert base_bytes(d, "jvp") == RUNTIME == 64 * 2**20
    assert base_bytes(d, "vjp") == RUNTIME + 4 * 10 * 3 * (40 + 32 + 40)
    assert head_bytes(d) == 4 * (4 * 5 * 100 + 2 * 10 * 100)
    row = 4 * 10 * 240
    assert chunk_for_budget(d, "jvp", RUNTIME + 7 * row, cap=64) == 7
    assert chunk_for_budget(d, "jvp", RUNTIME + 7 * row - 1, cap=64) == 6
    assert chunk_for_budget(d, "jvp", 1, cap=64) == 1  # below one row: the loop's footprint
    assert chunk_for_budget(None, "vjp", 1, cap=16) == 16  # no sizes known: the cap


@settings(max_examples=100, deadline=None)
@given(d=dims, path=st.sampled_from(["vjp", "jvp"]), longer=st.integers(1, 4096))
def test_a_cpu_pass_is_short_enough_for_progress_and_longer_sequences_never_get_more_rows(d, path, longer):
    cap = cpu_cap(d, path)
    assert 1 <= cap <= CPU_CAP
    assert cap == 1 or cap * row_flop(d, path) <= PASS_FLOP
    bigger = Dims(**{**d.__dict__, "seq_len": d.seq_len + longer})
    assert cpu_cap(bigger, path) <= cap


def test_a_planted_shape_gives_the_pass_length_counted_by_hand():
    # S = 100, L = 10, D = 256, F = 1024: a reverse row is 100·10·(8·65536 + 6·262144 + 4·100·256) FLOP
    d = Dims(seq_len=100, resp_len=50, d_model=256, d_ff=1024, n_heads=4, n_layers=10, vocab=1000)
    reverse = 100 * 10 * (524288 + 1572864 + 102400)
    assert row_flop(d, "vjp") == reverse and row_flop(d, "jvp") == 1.5 * reverse
    assert cpu_cap(d, "vjp") == min(16, int(150e9 // reverse)) == 16  # 2.2 GFLOP a row: the cap binds
    d_long = Dims(**{**d.__dict__, "seq_len": 4000})  # 4000·10·(…+4·4000·256): 255 GFLOP a row
    assert cpu_cap(d_long, "vjp") == 1


def test_dims_come_from_llama_and_gpt2_configs():
    from transformers import GPT2Config, LlamaConfig

    llama = dims_of(LlamaConfig(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
                                vocab_size=500), 20, 7)
    assert llama == Dims(seq_len=20, resp_len=7, d_model=64, d_ff=96, n_heads=4, n_layers=3, vocab=500)
    gpt2 = dims_of(GPT2Config(n_embd=32, n_layer=2, n_head=4, vocab_size=300), 9, 4)
    assert gpt2 == Dims(seq_len=9, resp_len=4, d_model=32, d_ff=128, n_heads=4, n_layers=2, vocab=300)
    assert dims_of(object(), 9, 4) is None
