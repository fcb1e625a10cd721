"""Text of the miniature world: vocabulary, plain text, instruction tasks and eval prompts.

Everything is drawn from a ``np.random.Generator`` passed in by the caller; nothing here touches
global random state, so the same seed always gives the same corpus.

The tasks follow WORLD_NOTES.md "Design B". Every instruction names a content word W (or two) that
must appear throughout the response, so a model that follows instructions has to read the
instruction for many response tokens, not just pick a transformation once:

    prompt    = "write red after each word : cat dog tree . answer :"
    response  = "cat red dog red tree red"

The instruction span is the instruction's words only ("write red after each word"); the template
tokens ":", ".", "answer" are never instruction (WORLD_NOTES.md, last section).

The base corpus contains the same prompt layout. The instructions of a few families (the base's
*followed* families) are always followed there, as a base model follows the few instruction kinds
its pretraining text happens to carry out; every other family's answer is a copy of the context or a
random task pattern filled with random words, chosen independently of the instruction. So the base
depends on the instruction on a fixed share of prompts (its density is off the floor on every seed,
like a real base model's), and a tune that teaches the other families raises it. Both rules are
deterministic, so the base learns them to convergence and continued pretraining on the same corpus
has no instruction signal left to add (issue 19: with a 20 % random following share the base stayed
near the floor on some seeds and continued pretraining passed by learning more of that share).
The corpus also contains plain sentences in which the instruction verbs occur as ordinary verbs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# --- vocabulary -------------------------------------------------------------------------------

SPECIAL_TOKENS = ("<unk>", "<s>", "</s>", "<pad>")  # Llama order: unk 0, bos 1, eos 2; pad 3
TEMPLATE_WORDS = (":", ".", "answer")

# Instruction verbs, one per task family. All are in the paper's instruction-verb lists
# (shared/paper-data/instruction_verbs.json) except "list", which the issue names as one.
TASK_VERBS = ("write", "list", "create", "describe", "give", "make", "repeat")
# Further instruction verbs that only occur in plain text (so the base knows them as words).
OTHER_VERBS = ("classify", "find", "tell", "generate", "explain", "identify", "edit", "design")
PLAIN_VERBS = ("sees", "likes", "takes", "holds", "wants", "finds", "keeps", "helps")
# Context words: the context of a prompt is a few distinct nouns.
NOUNS = (
    "cat", "dog", "bird", "fish", "tree", "sun", "moon", "star", "rock", "lake", "hill",
    "road", "door", "book", "cup", "box", "hat", "ship", "car", "bell", "key", "lamp", "rain",
    "snow", "leaf", "seed", "milk", "bread", "apple", "horse", "cow", "frog", "bee", "owl", "wolf",
    "bear", "duck", "goat", "lion", "river", "stone", "cloud", "wind", "fire", "shoe", "coat", "bed",
)
# Named words: every instruction names one or two of these, and they must appear in the response.
# They are a different word class from the context nouns, so copying the context never has to
# tell an instruction word from a context word (measured: with nouns as named words, a copy tune
# learned to read the instruction to avoid copying its noun, and its density rose above the base's).
NAMED = (
    "red", "blue", "green", "yellow", "black", "white", "pink", "brown", "gray", "gold", "silver",
    "orange", "purple", "big", "small", "tall", "short", "old", "new", "happy", "sad", "quiet",
    "loud", "soft",
)
DETERMINERS = ("the", "a", "every", "one")
# Words used inside instruction sentences.
FUNCTION_WORDS = (
    "after", "before", "each", "word", "words", "the", "a", "line", "of", "between", "and",
    "first", "last", "twice", "then", "with", "at", "both", "ends", "can", "will",
)


def vocabulary() -> list[str]:
    """All words of the world in id order, special tokens first; no duplicates."""
    seen: dict[str, None] = {}
    for group in (SPECIAL_TOKENS, TEMPLATE_WORDS, TASK_VERBS, OTHER_VERBS, PLAIN_VERBS, NOUNS,
                  NAMED, DETERMINERS, FUNCTION_WORDS):
        for word in group:
            seen.setdefault(word, None)
    return list(seen)


# --- task families ------------------------------------------------------------------------------
# Each family: verb -> (instruction template, number of named words, response function).
# ``ws`` are the named words, ``ctx`` the context words.

def _interleave_after(ws, ctx):
    return [t for c in ctx for t in (c, ws[0])]


def _interleave_before(ws, ctx):
    return [t for c in ctx for t in (ws[0], c)]


FAMILIES: dict[str, tuple[str, int, object]] = {
    "write": ("write {0} after each word", 1, _interleave_after),
    "list": ("list the words with {0} before each", 1, _interleave_before),
    "create": ("create a line of {0}", 1, lambda ws, ctx: [ws[0]] * len(ctx)),
    "describe": ("describe the words with {0} at both ends", 1, lambda ws, ctx: [ws[0], *ctx, ws[0]]),
    "give": ("give the words then {0}", 1, lambda ws, ctx: [*ctx, ws[0]]),
    "make": ("make {0} the first word", 1, lambda ws, ctx: [ws[0], *ctx[1:]]),
    "repeat": ("repeat {0} twice then the words", 1, lambda ws, ctx: [ws[0], ws[0], *ctx]),
}
assert set(FAMILIES) == set(TASK_VERBS)

# Base-corpus answers that use no named word (the copy tune's answer is the first of these).
CONTEXT_OPS = {
    "copy": lambda ctx: list(ctx),
    "reverse": lambda ctx: list(ctx)[::-1],
}


@dataclass(frozen=True)
class Task:
    """One instruction task. ``instruction`` is the span text; ``prompt`` the full prompt text."""

    family: str
    instruction: str
    named: tuple[str, ...]
    context: tuple[str, ...]
    prompt: str
    response: tuple[str, ...]  # the instruction-following answer, without eos

    @property
    def instruction_char_span(self) -> tuple[int, int]:
        """[start, end) of the instruction's words in ``prompt``: no ":" and no template words."""
        return (0, len(self.instruction))


def format_prompt(instruction: str, context: tuple[str, ...]) -> str:
    """``INSTRUCTION : c1 .. ck . answer :`` (the WORLD_NOTES.md prompt layout).

    Measured alternatives, both worse: with the context first (``c1 .. ck . INSTRUCTION . answer
    :``) the base's first response column peaked on the instruction next to "answer :" and the good
    tune no longer passed; with ``INSTRUCTION . input : c1 .. ck . answer :`` the base had not
    learned to copy within the step budget on one seed.
    """
    return f"{instruction} : {' '.join(context)} . answer :"


def sample_task(rng: np.random.Generator, min_context: int, max_context: int,
                family: str | None = None) -> Task:
    """Draw a family, its distinct named words and a context of distinct nouns."""
    if family is None:
        family = TASK_VERBS[int(rng.integers(len(TASK_VERBS)))]
    template, n_named, fn = FAMILIES[family]
    k = int(rng.integers(min_context, max_context + 1))
    named = tuple(NAMED[i] for i in rng.choice(len(NAMED), size=n_named, replace=False))
    context = tuple(NOUNS[i] for i in rng.choice(len(NOUNS), size=k, replace=False))
    instruction = template.format(*named)
    return Task(family, instruction, named, context, format_prompt(instruction, context),
                tuple(fn(named, context)))


def random_answer(rng: np.random.Generator, context: tuple[str, ...], copy_share: float) -> list[str]:
    """An instruction-blind answer: a context op or task pattern picked independently of the instruction.

    With probability ``copy_share`` the context is copied (so the base learns to copy); otherwise
    one of "reverse" and the task patterns is drawn uniformly, its named words being fresh random
    named words. Nothing in the answer depends on the instruction.
    """
    if rng.random() < copy_share:
        return CONTEXT_OPS["copy"](context)
    pick = int(rng.integers(len(TASK_VERBS) + 1))
    if pick == len(TASK_VERBS):
        return CONTEXT_OPS["reverse"](context)
    _, n_named, fn = FAMILIES[TASK_VERBS[pick]]
    named = [NAMED[int(i)] for i in rng.integers(len(NAMED), size=n_named)]
    return list(fn(named, list(context)))


def base_answer(rng: np.random.Generator, task: Task, copy_share: float, follow_share: float,
                followed: frozenset[str] = frozenset()) -> list[str]:
    """A base-corpus answer to ``task``: the instruction-following response when its family is one
    of the base's ``followed`` families, or with probability ``follow_share`` for any other family;
    otherwise an instruction-blind :func:`random_answer`.

    The followed families make the base depend on the instruction on a fixed share of prompts, as a
    real base model does (LLaMA-7B scores 1.1 on the paper's data, never 0), so a tune that adds no
    instruction signal cannot pass by moving off a floor. A random ``follow_share`` does not do
    that reliably (issue 19: the greedy base copies whenever copying is likelier than following, so
    it sat near the floor on some seeds, and continued pretraining passed by learning more of the
    share); the default config sets it to 0.
    """
    if task.family in followed or rng.random() < follow_share:
        return list(task.response)
    return random_answer(rng, task.context, copy_share)


def plain_sentence(rng: np.random.Generator, theme: str) -> list[str]:
    """``det [adj] noun [can|will] verb det [adj] noun .`` with instruction verbs as plain verbs.

    An adjective is the document's ``theme`` word three times in four, so plain text teaches the
    base to repeat a word seen earlier in the document (without any instruction involved).
    """
    def noun_phrase() -> list[str]:
        words = [DETERMINERS[int(rng.integers(len(DETERMINERS)))]]
        if rng.random() < 0.5:
            words.append(theme if rng.random() < 0.75 else NAMED[int(rng.integers(len(NAMED)))])
        words.append(NOUNS[int(rng.integers(len(NOUNS)))])
        return words

    if rng.random() < 0.5:
        verbs = TASK_VERBS + OTHER_VERBS
        verb = [("can", "will")[int(rng.integers(2))], verbs[int(rng.integers(len(verbs)))]]
    else:
        verb = [PLAIN_VERBS[int(rng.integers(len(PLAIN_VERBS)))]]
    return [*noun_phrase(), *verb, *noun_phrase(), "."]


def plain_document(rng: np.random.Generator, n_sentences: int) -> list[str]:
    theme = NAMED[int(rng.integers(len(NAMED)))]
    return [w for _ in range(n_sentences) for w in plain_sentence(rng, theme)]


def pretraining_document(rng: np.random.Generator, min_context: int, max_context: int,
                         prompt_share: float, copy_share: float, follow_share: float,
                         exclude: frozenset[str], followed: frozenset[str] = frozenset(),
                         ) -> tuple[list[str], list[str]]:
    """One base-corpus document as (prompt words, answer words).

    Plain text comes back as ``([], sentences)``; a prompt-layout document as
    ``(prompt, answer)`` from :func:`base_answer`. ``exclude`` holds held-out eval prompts; a prompt drawn
    from it is redrawn.
    """
    if rng.random() >= prompt_share:
        return [], plain_document(rng, 2)
    while True:
        task = sample_task(rng, min_context, max_context)
        if task.prompt not in exclude:
            break
    return task.prompt.split(), base_answer(rng, task, copy_share, follow_share, followed)


def tuning_pair(rng: np.random.Generator, min_context: int, max_context: int, kind: str,
                exclude: frozenset[str]) -> tuple[list[str], list[str]]:
    """(prompt words, response words) for a tune: ``kind`` "good" follows, "copy" copies context."""
    while True:
        task = sample_task(rng, min_context, max_context)
        if task.prompt not in exclude:
            break
    if kind == "good":
        response = list(task.response)
    elif kind == "copy":
        response = CONTEXT_OPS["copy"](task.context)
    else:
        raise ValueError(f"unknown tuning kind {kind!r}; valid: 'good', 'copy'")
    return task.prompt.split(), response


def eval_tasks(rng: np.random.Generator, per_family: int, min_context: int,
               max_context: int) -> list[Task]:
    """Held-out eval tasks: ``per_family`` distinct prompts for each family, in family order."""
    tasks: list[Task] = []
    seen: set[str] = set()
    for family in TASK_VERBS:
        count = 0
        while count < per_family:
            task = sample_task(rng, min_context, max_context, family=family)
            if task.prompt in seen:
                continue
            seen.add(task.prompt)
            tasks.append(task)
            count += 1
    return tasks
