"""Token bookkeeping (METHODS §1.2, §1.7): instruction masks from character spans for word-level,
SentencePiece-style and byte-level BPE fast tokenizers, chat templates, and batched generation."""

from __future__ import annotations

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

from builders import word_tokenizer
from shiftcheck.probes.importance import (
    AttributionError,
    adds_bos,
    build_sequence,
    encode_prompt,
    generate_responses,
    instruction_mask_from_offsets,
)
from shiftcheck.probes.prompts import Prompt, PromptFormatError, prompt_from_record

TEXT = "Write a short poem about the sea.\nInput: the cat is happy and the dog is sad"
SPAN = (0, 32)  # "Write a short poem about the sea" (no full stop, no template words)
CORPUS = [TEXT, "the sea is blue and the cat is red", "Write a list. Input: a poem about a dog"] * 20


def sentencepiece_like() -> PreTrainedTokenizerFast:
    core = Tokenizer(models.BPE(unk_token="<unk>"))
    # like SentencePiece on LLaMA: punctuation and newlines are pieces of their own
    core.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split("\n", "isolated"), pre_tokenizers.Punctuation(), pre_tokenizers.Metaspace()])
    core.decoder = decoders.Metaspace()
    core.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>", "<s>", "</s>"]))
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", core.token_to_id("<s>"))])
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def byte_level_bpe() -> PreTrainedTokenizerFast:
    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    core.post_processor = processors.ByteLevel(trim_offsets=False)
    core.train_from_iterator(CORPUS, trainers.BpeTrainer(vocab_size=300, special_tokens=["<|endoftext|>"],
                                                         initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<|endoftext|>", eos_token="<|endoftext|>")


def letters(tokens) -> str:
    return "".join(t.replace("▁", "").replace("Ġ", "").replace("Ċ", "") for t in tokens)


@pytest.mark.parametrize("make", [sentencepiece_like, byte_level_bpe], ids=["sentencepiece", "byte-bpe"])
def test_mask_covers_exactly_the_span_words(make):
    tok = make()
    prompt = Prompt("x", "toy", TEXT, (SPAN,))
    enc = encode_prompt(tok, prompt)
    marked = [t for t, m in zip(enc.prompt_tokens, enc.instruction_mask) if m]
    assert letters(marked) == "Writeashortpoemaboutthesea"
    assert not any(t in ("▁", "Ġ", "Ċ") for t in marked)
    assert tok.convert_tokens_to_ids(list(enc.prompt_tokens)) == list(enc.prompt_ids)


def test_word_level_tokenizer_gets_a_bos_prefix_that_is_never_attributed():
    tok = word_tokenizer()
    prompt = Prompt("x", "toy", "  write a short poem : the sea  ", ((2, 20),))
    enc = encode_prompt(tok, prompt)
    assert adds_bos(tok) and enc.prefix_ids == (tok.bos_token_id,)
    assert enc.text == "write a short poem : the sea"  # prompt.strip(); spans shifted with it
    assert enc.instruction_mask.tolist() == [True, True, True, True, False, False, False]
    ids = build_sequence(enc, [5, 6])
    assert ids.tolist() == [tok.bos_token_id, *enc.prompt_ids, 5, 6]


def test_byte_level_bpe_has_no_bos_so_nothing_is_prefixed():
    tok = byte_level_bpe()
    assert not adds_bos(tok)
    assert encode_prompt(tok, Prompt("x", "toy", TEXT, (SPAN,))).prefix_ids == ()


def test_chat_template_tokens_are_never_instruction_tokens():
    tok = sentencepiece_like()
    tok.chat_template = "{{ bos_token }}{% for m in messages %}USER: {{ m['content'] }} ASSISTANT:{% endfor %}"
    plain = encode_prompt(tok, Prompt("x", "toy", TEXT, (SPAN,)))
    templated = encode_prompt(tok, Prompt("x", "toy", TEXT, (SPAN,)), chat_template=True)
    assert templated.prefix_ids == (tok.bos_token_id,)
    assert len(templated.prompt_ids) > len(plain.prompt_ids)
    marked = [t for t, m in zip(templated.prompt_tokens, templated.instruction_mask) if m]
    assert letters(marked) == "Writeashortpoemaboutthesea"
    assert "USER" not in letters(marked) and "ASSISTANT" not in letters(marked)


def test_whitespace_only_pieces_are_dropped_at_span_edges_only():
    text = "ab  cd"
    offsets = [(0, 2), (2, 3), (3, 4), (4, 6)]
    # METHODS §1.7: the rule applies at the edges; whitespace inside a span stays instruction
    assert instruction_mask_from_offsets(text, offsets, [(0, 6)]).tolist() == [True, True, True, True]
    assert instruction_mask_from_offsets(text, offsets, [(1, 4)]).tolist() == [True, False, False, False]
    assert instruction_mask_from_offsets(text, offsets, [(2, 4)]).tolist() == [False, False, False, False]


def test_a_quote_piece_at_a_span_edge_is_kept():
    text = ' "hi" '
    offsets = [(0, 2), (2, 4), (4, 5), (5, 6)]  # '▁"', 'hi', '"', '▁'
    assert instruction_mask_from_offsets(text, offsets, [(0, 6)]).tolist() == [True, True, True, False]


def test_spans_that_cover_no_token_or_lie_outside_the_prompt_are_errors():
    tok = word_tokenizer()
    with pytest.raises(AttributionError, match="cover no prompt token"):
        encode_prompt(tok, Prompt("x", "toy", "write  a poem", ((5, 6),)))  # a span holding only a space
    with pytest.raises(PromptFormatError, match=r"span \[3, 99\) lies outside the prompt"):
        prompt_from_record({"id": "y", "prompt": "write a poem", "instruction_char_spans": [[3, 99]]}, "file:1")


def test_batched_greedy_generation_equals_one_prompt_at_a_time():
    tok = word_tokenizer()
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                         num_attention_heads=4, num_key_value_heads=2, bos_token_id=1, eos_token_id=2,
                                         pad_token_id=3)).eval()
    texts = ["write a poem", "list the red house and the blue tree", "the cat", "describe a long river : the sea"]
    encs = [encode_prompt(tok, Prompt(str(i), "toy", t, ())) for i, t in enumerate(texts)]
    batched = generate_responses(model, tok, encs, max_new_tokens=6, batch_size=4)
    single = [generate_responses(model, tok, [e], max_new_tokens=6, batch_size=1)[0] for e in encs]
    assert batched == single
    assert all(2 not in r for r in batched)  # EOS is cut


# --------------------------------------------------------------------------------------------- generation


def _manual_greedy(model, ids: list[int], eos: set[int], n: int) -> list[int]:
    """Argmax decoding written out by hand: no penalty, no blocking, stop at any EOS."""
    seq, out = list(ids), []
    with torch.no_grad():
        for _ in range(n):
            nxt = int(model(input_ids=torch.tensor([seq])).logits[0, -1].argmax())
            if nxt in eos:
                break
            out.append(nxt)
            seq.append(nxt)
    return out


def test_generation_ignores_the_checkpoints_sampling_and_penalty_settings():
    from transformers import GenerationConfig

    from builders import tiny_model
    from shiftcheck.probes.importance import encode_prompt, generate_responses

    tok = word_tokenizer()
    model = tiny_model("llama", seed=3).eval()
    # A checkpoint shipped with settings that would change greedy decoding if honoured:
    model.generation_config = GenerationConfig(do_sample=True, temperature=5.0, top_k=2, repetition_penalty=50.0,
                                               no_repeat_ngram_size=1, num_beams=3)
    prompt = Prompt("p", "toy", "write a short poem about the sea", ((0, 5),))
    enc = encode_prompt(tok, prompt)
    got = generate_responses(model, tok, [enc], max_new_tokens=12)[0]
    want = _manual_greedy(model, [*enc.prefix_ids, *enc.prompt_ids], {tok.eos_token_id}, 12)
    assert list(got) == want


def test_every_eos_id_of_the_generation_config_stops_a_response():
    from transformers import GenerationConfig

    from builders import tiny_model
    from shiftcheck.probes.importance import encode_prompt, generate_responses

    tok = word_tokenizer()
    model = tiny_model("llama", seed=2).eval()
    enc = encode_prompt(tok, Prompt("p", "toy", "list the red house", ((0, 4),)))
    free = _manual_greedy(model, [*enc.prefix_ids, *enc.prompt_ids], {tok.eos_token_id}, 8)
    assert len(free) >= 3, "the tiny model must produce a few tokens for this test to mean anything"
    second_eos = free[2]  # make the third generated token an end-of-turn id
    model.generation_config = GenerationConfig(eos_token_id=[tok.eos_token_id, second_eos])
    got = generate_responses(model, tok, [enc], max_new_tokens=8)[0]
    assert list(got) == free[: free.index(second_eos)]


def test_whitespace_only_tokens_are_stripped_from_both_ends_of_a_response():
    from shiftcheck.probes.importance import strip_response

    class Tok:
        pieces = {0: " ", 1: "cat", 2: "\n", 3: "dog", 4: " "}

        def decode(self, ids, skip_special_tokens=False):
            return "".join(self.pieces[i] for i in ids)

    assert strip_response(Tok(), [0, 2, 1, 4, 3, 2, 0]) == (1, 4, 3)  # inner whitespace stays
    assert strip_response(Tok(), [0, 2]) == ()


def test_a_tokenizer_that_merges_across_the_prompt_boundary_is_an_error():
    from shiftcheck.probes.importance import check_prompt_prefix, encode_prompt

    tok = word_tokenizer()
    enc = encode_prompt(tok, Prompt("p", "toy", "write a poem", ((0, 5),)))
    check_prompt_prefix(tok, enc, "the sea", "p")  # word-level: the prompt stays a prefix

    class Merging:
        """Pretends that 'poem' + ' the' merges into one token, as byte-level BPE can at a boundary."""

        def __call__(self, text, add_special_tokens=False):
            ids = tok(text, add_special_tokens=False).input_ids
            class R:
                input_ids = ids[:2] + [99] + ids[4:] if text.startswith("write a poem the") else ids
            return R()

    with pytest.raises(AttributionError, match="not a prefix"):
        check_prompt_prefix(Merging(), enc, "the sea", "p")
