"""``shiftcheck paper-data convert``: the restricted unpickler, the authors' text conventions, and a
conversion of a hand-made release whose truth is known."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from shiftcheck.cli import main
from shiftcheck.probes import paper_data as pdata
from test_replay import PAPER_DATA, needs_paper_data


# --------------------------------------------------------------------------------------------- unpickler


@pytest.mark.parametrize("protocol", range(pickle.HIGHEST_PROTOCOL + 1))
def test_benign_pickles_of_arrays_strings_and_containers_round_trip(protocol):
    item = {"ID": "x", "Input": ["▁Write", "▁a"], "Output": ("▁ok",),
            "Explain": np.arange(6.0, dtype=np.float32).reshape(2, 3), "empty": np.zeros(0, dtype=np.float32),
            "nested": [[1, 2.5], {"k": [np.array([1, 2], dtype=np.uint8), np.float64(0.5)]}], "b": b"\x00\xff"}
    back = pdata.restricted_load(pickle.dumps(item, protocol=protocol))
    assert back["Explain"].dtype == np.float32 and back["empty"].shape == (0,) and back["b"] == b"\x00\xff"
    assert back["nested"][1]["k"][1] == 0.5
    assert back["Input"] == ["▁Write", "▁a"] and back["Output"] == ("▁ok",)
    np.testing.assert_array_equal(back["Explain"], item["Explain"])
    np.testing.assert_array_equal(back["nested"][1]["k"][0], [1, 2])


class _Touch:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class _Popen:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (subprocess.Popen, (["touch", str(self.path)],))


class _Eval:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (eval, (f"open({str(self.path)!r}, 'w')",))


class _Custom:
    def __init__(self, path):
        self.path = path


def _proto0(module, name, path):
    """A hand-written protocol-0 pickle: ``module.name("touch PATH")``."""
    return f"c{module}\n{name}\n(S'touch {path}'\ntR.".encode()


@pytest.mark.parametrize("make,refused", [
    (lambda p: pickle.dumps({"Explain": _Touch(p)}), rf"\b{os.system.__module__}\.system\b"),
    (lambda p: _proto0("os", "system", p), r"\bos\.system\b"),
    (lambda p: pickle.dumps([_Eval(p)], protocol=2), r"\b__builtin__\.eval\b"),  # protocol 2: Python 2 name
    (lambda p: _proto0("builtins", "eval", p), r"\bbuiltins\.eval\b"),
    (lambda p: pickle.dumps({"Input": ["a"], "Explain": _Popen(p)}), r"\bsubprocess\.Popen\b"),
    (lambda p: pickle.dumps(_Custom(p)), r"\btest_paper_data\._Custom\b"),
])
def test_hostile_pickles_are_refused_by_name_and_run_nothing(tmp_path, make, refused):
    target = tmp_path / "pwned"
    data = make(target)
    with pytest.raises(pdata.UnsafePickleError, match=refused):
        pdata.restricted_load(data)
    assert not target.exists()


def test_a_hostile_pickle_in_the_release_stops_the_conversion_with_its_name(tmp_path, capsys):
    _fake_release(tmp_path / "repo")
    target = tmp_path / "pwned"
    bad = tmp_path / "repo" / "results" / "attribution_interpret" / "ifa_vicuna_7b" / "mtbench_writing_81.pkl"
    bad.write_bytes(pickle.dumps({"Input": ["a"], "Output": [], "Explain": _Touch(target)}))
    assert main(["paper-data", "convert", str(tmp_path / "repo"), str(tmp_path / "out")]) == 2
    assert f"{os.system.__module__}.system" in capsys.readouterr().err
    assert not target.exists()


# --------------------------------------------------------------------------------------------- conventions


def test_decode_text_undoes_the_authors_escaping():
    assert pdata.decode_text('"say ""hi""/nnow/tgo"') == 'say "hi"\nnow\tgo'
    assert pdata.decode_text("see http://x.org/news") == "see http://x.org\news"  # their quirk, kept


def test_instruction_sentences_expand_fragments_and_drop_template_words():
    prompt = "Rewrite the text. Keep it short.\n\nInput: The cat sat.\n\nOutput:"
    got = pdata.instruction_sentences(prompt, "Rewrite the text|||Input: The cat sat.&&&The cat sat.")
    assert got == ["Rewrite the text.", "The cat sat."]
    assert pdata.char_spans(prompt, got) == [[0, 17], [41, 53]]
    assert pdata.char_spans("Do it on Overleaf.", [" on Overleaf."]) == [[6, 18]]  # edge whitespace trimmed


def test_piece_offsets_follow_sentencepiece_spaces_and_byte_runs():
    text = "Write é\nnow"
    pieces = ["▁Write", "▁", "<0xC3>", "<0xA9>", "<0x0A>", "now"]
    offsets = pdata.piece_offsets(pieces, text)
    assert [text[s:e] for s, e in offsets] == ["Write", " ", "é", "é", "\n", "now"]
    assert pdata.piece_offsets(["▁Other"], text) is None
    assert pdata.piece_offsets(["▁Write", "<0xC3>"], "Write") is None  # a cut UTF-8 run


def test_instruction_mask_drops_the_authors_edge_pieces_only_at_span_ends():
    text = 'Say "hi"\nnow'
    pieces = ["▁Say", '▁"', "hi", '"', "<0x0A>", "now"]
    offsets = pdata.piece_offsets(pieces, text)
    assert pdata.instruction_mask(pieces, offsets, [(4, 12)]).tolist() == [False, False, True, True, True, True]
    assert pdata.instruction_mask(pieces, offsets, [(0, 9)]).tolist() == [True, True, True, True, False, False]


def test_merge_case_folds_later_variants_into_the_first_form():
    vocab = [("the", 0.5), ("The", 0.25), ("Apple", 0.125), ("apple", 0.0625), ("THE", 0.0625)]
    assert pdata.merge_case(vocab) == [("the", 0.8125, 1), ("Apple", 0.1875, 3)]


# --------------------------------------------------------------------------------------------- end to end

PIECES = {
    "user_oriented_task_0": ["▁Sum", "mar", "ize", "▁the", "▁text", ".", "<0x0A>", "<0x0A>", "Input", ":",
                             "▁Dog", "s", "▁bark", ".", "<0x0A>", "<0x0A>", "Output", ":"],
    "mtbench_writing_81": ["▁Write", "▁a", "▁poem", "▁about", "▁", "<0xE2>", "<0x98>", "<0x95>", "."],
    "lima_author_3": ["▁Say", "▁\"", "hi", "\"", "."],
}
RESPONSES = {"user_oriented_task_0": ["▁A", "▁b", "."], "mtbench_writing_81": ["▁Tea", "!"], "lima_author_3": []}


def _fake_release(root):
    """The authors' layout in miniature: their escaping (/n, /t, quoted fields with ""), their
    header lines, a blank line, an empty response stored as shape (0,), and float32 levels."""
    (root / "datasets").mkdir(parents=True)
    rows = [("user_oriented_task_0", "Summarize the text./n/nInput: Dogs bark./n/nOutput:", "Dogs/tbark.",
             "Summarize the text.&&&Dogs bark."),
            ("mtbench_writing_81", "Write a poem about ☕.", "A poem.", "Write a poem about ☕.&&&"),
            ("lima_author_3", '"Say ""hi""."', '"""hi"""', 'Say ""hi"".')]
    with (root / "datasets" / "FinalDataset.tsv").open("w", encoding="utf-8") as fh:
        fh.write("ID\tPrompt\tResponse\tInstruct&Context\n")
        for row in rows:
            fh.write("\t".join(row) + "\n")
        fh.write("\n")
    with (root / "datasets" / "AnnotatedDataset.tsv").open("w", encoding="utf-8") as fh:
        fh.write("File\tModel\tPrompt\tReference\tInstruct\tResponse\tRating\n")
        fh.write("user_oriented_task_0.pkl\tvicuna_7B\tp\tr\tSummarize/nit\tA b./nc\t3\n")
        fh.write("mtbench_writing_81.pkl\tvicuna_7B\tp\tr\ti\tTea!\t1\n")
        fh.write("user_oriented_task_0.pkl\talpaca_7B\tp\tr\ti\tresp\t-1\n")
    (root / "datasets" / "SingleShareGPT_Vocab.tsv").write_text("the\t0.5\nThe\t0.25\n,\t0.125\n", encoding="utf-8")
    explains = {}
    for model, scale in (("ifa_llama_7b", 1), ("ifa_vicuna_7b", 2)):
        folder = root / "results" / "attribution_interpret" / model
        folder.mkdir(parents=True)
        for pid, toks in PIECES.items():
            resp = RESPONSES[pid]
            explain = ((np.arange(len(toks) * len(resp)).reshape(len(toks), len(resp)) * scale) % 11).astype(np.float32)
            if not resp:
                explain = np.zeros(0, dtype=np.float32)  # what their generator left for an empty response
            explains[model, pid] = explain
            item = {"ID": pid, "Input": toks, "Reference": "", "Output": resp, "Explain": explain}
            (folder / f"{pid}.pkl").write_bytes(pickle.dumps(item))
    return explains


def test_convert_writes_replay_files_that_load_and_match_the_inputs(tmp_path, capsys):
    from shiftcheck.probes.replay import load_replay

    explains = _fake_release(tmp_path / "repo")
    assert main(["paper-data", "convert", str(tmp_path / "repo"), str(tmp_path / "out")]) == 0
    assert "converted 3 prompts, 3 ratings, 3 vocabulary rows" in capsys.readouterr().out
    out = tmp_path / "out"
    prompts = [json.loads(line) for line in (out / "prompts.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [p["id"] for p in prompts] == list(PIECES)
    assert prompts[0]["prompt"] == "Summarize the text.\n\nInput: Dogs bark.\n\nOutput:"
    assert prompts[0]["reference"] == "Dogs\tbark." and prompts[0]["context_annotation"] == "Dogs bark."
    assert prompts[0]["instruction_spans"] == ["Summarize the text."] and prompts[0]["source"] == "self-instruct"
    assert prompts[1]["subset"] == "writing" and prompts[1]["source"] == "mt-bench"
    assert prompts[2]["prompt"] == 'Say "hi".' and prompts[2]["reference"] == '"hi"'
    assert (out / "ratings.tsv").read_text().splitlines() == [
        "id\tsource\tmodel\trating\tlabel", "user_oriented_task_0\tself-instruct\tvicuna_7B\t3\tfollowed",
        "mtbench_writing_81\tmt-bench\tvicuna_7B\t1\tunfollowed",
        "user_oriented_task_0\tself-instruct\talpaca_7B\t-1\tunrated"]
    first = json.loads((out / "ratings.jsonl").read_text().splitlines()[0])
    assert first["response"] == "A b.\nc" and first["alt_instruction_annotation"] == "Summarize\nit"
    assert (out / "sharegpt_vocab.tsv").read_text().splitlines() == [
        "rank\tword\tfrequency\tfirst_raw_rank", "1\tthe\t0.75\t1", "2\t,\t0.125\t3"]
    assert (out / "sharegpt_vocab_raw.tsv").read_text().splitlines()[2] == "2\tThe\t0.25"

    masks = {"user_oriented_task_0": [True] * 6 + [False] * 12,  # not Input/Output, not the context
             "mtbench_writing_81": [True] * 9, "lima_author_3": [True] * 5}
    for model in ("llama_7b", "vicuna_7b"):
        with np.load(out / "attribution" / f"{model}.npz", allow_pickle=False) as npz:
            assert all(npz[k].dtype == np.uint8 for k in npz.files)
        inst = {i.id: i for i in load_replay(out / "attribution" / model).instances}
        assert list(inst) == list(PIECES)
        for pid, toks in PIECES.items():
            assert list(inst[pid].prompt_tokens) == toks and list(inst[pid].response_tokens) == RESPONSES[pid]
            assert inst[pid].instruction_mask.tolist() == masks[pid], (model, pid)
            want = explains[f"ifa_{model}", pid].reshape(len(toks), len(RESPONSES[pid]))
            np.testing.assert_array_equal(inst[pid].S0, want)
        assert inst["lima_author_3"].S0.shape == (5, 0) and inst["lima_author_3"].score() == 0.0


def test_convert_names_what_is_missing(tmp_path, capsys):
    (tmp_path / "repo").mkdir()
    assert main(["paper-data", "convert", str(tmp_path / "repo"), str(tmp_path / "out")]) == 2
    assert "FinalDataset.tsv" in capsys.readouterr().err


def test_console_script_converts_end_to_end(tmp_path):
    _fake_release(tmp_path / "repo")
    done = subprocess.run([sys.executable, "-m", "shiftcheck", "paper-data", "convert", str(tmp_path / "repo"),
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "attribution/vicuna_7b.npz + .jsonl: 3 instances" in done.stdout


# --------------------------------------------------------------------------------------------- Tables 3 and 5 files

LINEAR_HEADER = "Explainable\tTokens\tSummary\tModel\tSize\tLayer\tType\tHead\tRank\tScore\tTopK"


def _linear_row(label, model, layer, rank, summary="dates", words="May|||June|||July"):
    tokens = "Words: " + ", ".join(words.split("|||")) + "."
    return "\t".join(([label] if label is not None else []) + ["1" if "cannot" not in summary.lower() else "0",
                      tokens, summary, model, "7B", str(layer), "FFN", "0", str(rank), "0.01", words])


def _authors_results(root):
    """results/linear_interpret/ in their format (two seeds, both models per file, explainable rows
    only; seed 0 also has linear_seed0.tsv with an unexplainable row) and the Table 3 pairs file cut
    into byte parts in the middle of a row and of a UTF-8 character."""
    lin = root / "results" / "linear_interpret"
    lin.mkdir(parents=True)
    for seed in (0, 1):
        task = ["Task\t" + LINEAR_HEADER, _linear_row("daily writing", "llama", 0, 1),
                _linear_row("coding; translation", "vicuna", 0, 1), _linear_row("None", "vicuna", 3, 2, "verbs"),
                "Task\t" + LINEAR_HEADER, "a broken row"]
        concept = ["Concept\t" + LINEAR_HEADER, _linear_row("Semantic", "llama", 0, 1),
                   _linear_row("Semantics", "vicuna", 0, 1), _linear_row("Syntax", "vicuna", 3, 2, "verbs")]
        (lin / f"linear_task_seed{seed}.tsv").write_text("\n".join(task) + "\n", encoding="utf-8")
        (lin / f"linear_concept_seed{seed}.tsv").write_text("\n".join(concept) + "\n", encoding="utf-8")
    every = [LINEAR_HEADER, _linear_row(None, "llama", 0, 1), _linear_row(None, "llama", 1, 1, "Cannot Tell.")]
    (lin / "linear_seed0.tsv").write_text("\n".join(every) + "\n", encoding="utf-8")
    bil = root / "results" / "bilinear_interpret"
    bil.mkdir(parents=True)
    pairs = ("Model\tSize\tLayer\tType\tHead\tDim\tRank\tScore\tTopK\n"
             "llama\t7B\t0\tQK\t0\t0\t1\t0.5\twrite=essay|||café=thé\n"
             "vicuna\t7B\t0\tQK\t0\t0\t1\t0.5\twrite=poem\n").encode("utf-8")
    cut = pairs.index("é".encode("utf-8")) + 1  # inside the two bytes of é
    for name, chunk in (("aa", pairs[:40]), ("ab", pairs[40:cut]), ("ac", pairs[cut:])):
        (bil / f"bilinear_words_split.tsv{name}").write_bytes(chunk)


def test_convert_splits_tables_3_and_5_files_by_model_with_seeds_as_repetitions(tmp_path, capsys):
    from shiftcheck.probes.attention.io import read_replay
    from shiftcheck.probes.ffn.annotators.replay import load_replay

    _fake_release(tmp_path / "repo")
    _authors_results(tmp_path / "repo")
    assert main(["paper-data", "convert", str(tmp_path / "repo"), str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "ffn/vicuna.annotated.tsv: 2 seed(s), 4 components" in printed and "malformed rows skipped" in printed
    vicuna = load_replay(tmp_path / "out" / "ffn" / "vicuna.annotated.tsv")
    assert [len(r) for r in vicuna.repetitions] == [2, 2] and vicuna.explainable_only
    first = vicuna.repetitions[0][0]
    assert (first.scenario, first.level, first.words) == ("coding; translation", "Semantics", ("May", "June", "July"))
    llama = load_replay(tmp_path / "out" / "ffn" / "llama.annotated.tsv").repetitions
    assert [a.explainable for a in llama[0]] == [True, False]  # linear_seed0.tsv adds the unexplainable one
    assert [a.explainable for a in llama[1]] == [True]
    pairs = {m: Path(p).read_text(encoding="utf-8") for m, p in
             ((m, tmp_path / "out" / "pairs" / f"{m}.tsv") for m in ("llama", "vicuna"))}
    assert "café=thé" in pairs["llama"] and "poem" not in pairs["llama"] and "write=poem" in pairs["vicuna"]
    read_replay(tmp_path / "out" / "pairs" / "vicuna.tsv", "tuned", min_count=1)  # loads as finding 2's replay


def test_the_authors_folder_replays_directly_with_a_model_name(tmp_path):
    from shiftcheck.probes.ffn.annotators.replay import load_replay

    _authors_results(tmp_path)
    direct = load_replay(f"{tmp_path / 'results' / 'linear_interpret'}::vicuna")
    assert direct.model == "vicuna" and len(direct.repetitions) == 2 and direct.skipped_rows == 2


# --------------------------------------------------------------------------------------------- the real release


@needs_paper_data
def test_instruction_sentences_reproduce_the_released_spans():
    for rec in map(json.loads, (PAPER_DATA / "prompts.jsonl").read_text(encoding="utf-8").splitlines()):
        annotation = rec["instruction_annotation"] + ("&&&" + rec["context_annotation"] if rec["context_annotation"] else "")
        got = pdata.instruction_sentences(rec["prompt"], annotation)
        assert got == rec["instruction_spans"], rec["id"]
        assert pdata.char_spans(rec["prompt"], got) == rec["instruction_char_spans"], rec["id"]


@needs_paper_data
def test_masks_from_pieces_reproduce_the_released_instruction_masks():
    prompts = {r["id"]: r for r in map(json.loads, (PAPER_DATA / "prompts.jsonl").read_text(encoding="utf-8").splitlines())}
    for model in ("llama_7b", "vicuna_7b"):
        for line in (PAPER_DATA / "attribution" / f"{model}.jsonl").read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            rec = prompts[row["id"]]
            lead = len(rec["prompt"]) - len(rec["prompt"].lstrip())
            offsets = pdata.piece_offsets(row["prompt_tokens"], rec["prompt"].strip())
            assert offsets is not None, row["id"]
            spans = [(s - lead, e - lead) for s, e in rec["instruction_char_spans"]]
            mask = pdata.instruction_mask(row["prompt_tokens"], offsets, spans)
            assert mask.astype(int).tolist() == row["instruction_token_mask"], (model, row["id"])


AUTHORS_REPO = os.environ.get("SHIFTCHECK_AUTHORS_REPO")


@needs_paper_data
@pytest.mark.skipif(not AUTHORS_REPO, reason="set SHIFTCHECK_AUTHORS_REPO=<clone of "
                    "JacksonWuxs/Interpret_Instruction_Tuning_LLMs> to convert the real release and compare")
def test_converting_the_real_release_reproduces_the_reference_files(tmp_path):
    pdata.convert(Path(AUTHORS_REPO), tmp_path)
    for name in ("prompts.jsonl", "ratings.tsv", "ratings.jsonl", "sharegpt_vocab_raw.tsv", "sharegpt_vocab.tsv",
                 "attribution/llama_7b.jsonl", "attribution/vicuna_7b.jsonl"):
        assert (tmp_path / name).read_bytes() == (PAPER_DATA / name).read_bytes(), name
    for model in ("llama_7b", "vicuna_7b"):
        with np.load(tmp_path / "attribution" / f"{model}.npz") as ours, \
                np.load(PAPER_DATA / "attribution" / f"{model}.npz") as ref:
            assert ours.files == ref.files
            for key in ref.files:
                assert ours[key].dtype == ref[key].dtype and np.array_equal(ours[key], ref[key]), (model, key)
