"""``shiftcheck paper-data convert``: the restricted unpickler, the authors' text conventions, and a
conversion of a hand-made release whose truth is known."""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest

from shiftcheck.cli import main
from shiftcheck.probes import paper_data as pdata
from test_replay import PAPER_DATA, needs_paper_data


# --------------------------------------------------------------------------------------------- unpickler


def test_benign_pickles_of_arrays_strings_and_containers_round_trip():
    item = {"ID": "x", "Input": ["▁Write", "▁a"], "Output": ("▁ok",), "Explain": np.arange(6.0).reshape(2, 3),
            "nested": [[1, 2.5], {"k": np.array([1, 2], dtype=np.uint8)}]}
    back = pdata.restricted_load(pickle.dumps(item))
    assert back["Input"] == ["▁Write", "▁a"] and back["Output"] == ("▁ok",)
    np.testing.assert_array_equal(back["Explain"], item["Explain"])
    np.testing.assert_array_equal(back["nested"][1]["k"], [1, 2])


class _Touch:
    def __init__(self, path):
        self.path = path

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


class _Eval:
    def __reduce__(self):
        return (eval, ("__import__('os').getcwd()",))


class _Custom:
    pass


@pytest.mark.parametrize("make,refused", [
    (lambda tmp: _Touch(tmp / "pwned"), "system"),
    (lambda tmp: _Eval(), "builtins.eval"),
    (lambda tmp: __import__("subprocess").Popen, "subprocess.Popen"),
    (lambda tmp: _Custom(), "_Custom"),
])
def test_hostile_pickles_are_refused_by_name_and_run_nothing(tmp_path, make, refused):
    data = pickle.dumps({"Explain": make(tmp_path)})
    with pytest.raises(pdata.UnsafePickleError, match=refused):
        pdata.restricted_load(data)
    assert not (tmp_path / "pwned").exists()


# --------------------------------------------------------------------------------------------- conventions


def test_decode_text_undoes_the_authors_escaping():
    assert pdata.decode_text('"say ""hi""/nnow/tgo"') == 'say "hi"\nnow\tgo'


def test_instruction_sentences_expand_fragments_and_drop_template_words():
    prompt = "Rewrite the text. Keep it short.\n\nInput: The cat sat.\n\nOutput:"
    got = pdata.instruction_sentences(prompt, "Rewrite the text|||Input: The cat sat.&&&The cat sat.")
    assert got == ["Rewrite the text.", "The cat sat."]
    assert pdata.char_spans(prompt, got) == [[0, 17], [41, 53]]


@needs_paper_data
def test_instruction_sentences_reproduce_the_released_spans():
    records = [json.loads(line) for line in (PAPER_DATA / "prompts.jsonl").read_text().splitlines()[:200]]
    for rec in records:
        got = pdata.instruction_sentences(rec["prompt"], rec["instruction_annotation"])
        assert set(got) == set(rec["instruction_spans"]), rec["id"]


def test_piece_offsets_follow_sentencepiece_spaces_and_byte_runs():
    text = "Write é\nnow"
    pieces = ["▁Write", "▁", "<0xC3>", "<0xA9>", "<0x0A>", "now"]
    offsets = pdata.piece_offsets(pieces, text)
    assert [text[s:e] for s, e in offsets] == ["Write", " ", "", "é", "\n", "now"]
    assert pdata.piece_offsets(["▁Other"], text) is None


# --------------------------------------------------------------------------------------------- end to end


def _fake_release(root):
    (root / "datasets").mkdir(parents=True)
    rows = [("user_oriented_task_0", "Summarize the text./n/nInput: Dogs bark./n/nOutput:", "Dogs bark.",
             "Summarize the text.&&&Dogs bark."),
            ("mtbench_writing_81", "Write a poem.", "A poem.", "Write a poem.&&&")]
    with (root / "datasets" / "FinalDataset.tsv").open("w") as fh:
        fh.write("ID\tPrompt\tResponse\tInstruct\n")
        for row in rows:
            fh.write("\t".join(row) + "\n")
    with (root / "datasets" / "AnnotatedDataset.tsv").open("w") as fh:
        fh.write("File\tModel\tPrompt\tReference\tInstruct\tResponse\tRating\n")
        fh.write("user_oriented_task_0.pkl\tvicuna_7B\tp\tr\ti\tresp\t3\n")
        fh.write("mtbench_writing_81.pkl\tvicuna_7B\tp\tr\ti\tresp\t1\n")
    pieces = {"user_oriented_task_0": ["▁Sum", "mar", "ize", "▁the", "▁text", ".", "<0x0A>", "<0x0A>", "Input", ":",
                                       "▁Dog", "s", "▁bark", ".", "<0x0A>", "<0x0A>", "Output", ":"],
              "mtbench_writing_81": ["▁Write", "▁a", "▁poem", "."]}
    for model, scale in (("ifa_llama_7b", 1), ("ifa_vicuna_7b", 2)):
        (root / "results" / "attribution_interpret" / model).mkdir(parents=True)
        for pid, toks in pieces.items():
            explain = (np.arange(len(toks) * 3).reshape(len(toks), 3) * scale) % 11
            item = {"ID": pid, "Input": toks, "Reference": "", "Output": ["▁A", "▁b", "."], "Explain": explain}
            (root / "results" / "attribution_interpret" / model / f"{pid}.pkl").write_bytes(pickle.dumps(item))
    return pieces


def test_convert_writes_replay_files_that_load(tmp_path, capsys):
    from shiftcheck.probes.replay import load_replay

    pieces = _fake_release(tmp_path / "repo")
    assert main(["paper-data", "convert", str(tmp_path / "repo"), str(tmp_path / "out")]) == 0
    assert "converted 2 prompts, 2 ratings" in capsys.readouterr().out
    prompts = [json.loads(line) for line in (tmp_path / "out" / "prompts.jsonl").read_text().splitlines()]
    assert prompts[0]["prompt"] == "Summarize the text.\n\nInput: Dogs bark.\n\nOutput:"
    assert prompts[0]["instruction_spans"] == ["Summarize the text."] and prompts[0]["source"] == "self-instruct"
    assert (tmp_path / "out" / "ratings.tsv").read_text().splitlines()[1:] == [
        "user_oriented_task_0\tvicuna_7B\t3\tfollowed", "mtbench_writing_81\tvicuna_7B\t1\tunfollowed"]
    result = load_replay(tmp_path / "out" / "attribution" / "vicuna_7b")
    inst = {i.id: i for i in result.instances}
    mask = inst["user_oriented_task_0"].instruction_mask.tolist()
    assert mask == [True] * 6 + [False] * 12  # "Summarize the text." only; not Input/Output or the context
    assert inst["mtbench_writing_81"].instruction_mask.tolist() == [True] * 4
    assert list(inst["mtbench_writing_81"].prompt_tokens) == pieces["mtbench_writing_81"]
    expected = (np.arange(12).reshape(4, 3) * 2) % 11
    np.testing.assert_array_equal(inst["mtbench_writing_81"].S0, expected)


@needs_paper_data
def test_masks_from_pieces_reproduce_the_released_instruction_masks():
    from shiftcheck.probes.importance.tokens import instruction_mask_from_offsets

    prompts = {r["id"]: r for r in map(json.loads, (PAPER_DATA / "prompts.jsonl").read_text().splitlines())}
    rows = [json.loads(line) for line in (PAPER_DATA / "attribution" / "vicuna_7b.jsonl").read_text().splitlines()]
    agree = 0
    for row in rows:
        rec = prompts[row["id"]]
        text = rec["prompt"].strip()
        lead = len(rec["prompt"]) - len(rec["prompt"].lstrip())
        offsets = pdata.piece_offsets(row["prompt_tokens"], text)
        assert offsets is not None, row["id"]
        spans = [(s - lead, e - lead) for s, e in rec["instruction_char_spans"]]
        agree += instruction_mask_from_offsets(text, offsets, spans).astype(int).tolist() == row["instruction_token_mask"]
    assert agree / len(rows) > 0.98, f"{agree}/{len(rows)}"  # measured: 624 of 632
