"""Our own wording of the paper's three annotation templates (Appendix D), same structure: a role,
few-shot examples, and the answer format. ``TEMPLATE_VERSION`` is part of every cache key: change
it whenever a word below changes."""

from __future__ import annotations

TEMPLATE_VERSION = "shiftcheck-ffn-v1"

DESCRIBE_SYSTEM = (
    "You interpret neurons of a language model. You are given the words a hidden direction of the "
    "model responds to most strongly. Say in a few words what most of these words have in common. "
    "If no common theme covers most of them, answer exactly: Cannot Tell."
)
DESCRIBE_SHOTS = (
    ("Words: running, jumping, swimming, cooking, reading, singing, writing, walking, eating, sleeping, "
     "dancing, fishing, painting, driving, climbing.", "verbs in their -ing form"),
    ("Words: def, return, import, lambda, self, print, elif, numpy, append, len, str, dict, class, None, "
     "range.", "Python programming keywords and functions"),
    ("Words: integral, derivative, matrix, vector, theorem, equation, polynomial, sum, prime, modulo, "
     "fraction, algebra, geometry, calculus, exponent.", "mathematics terms"),
    ("Words: perro, casa, gracias, mujer, ciudad, ahora, siempre, nunca, mucho, bueno, libro, agua, "
     "noche, tiempo, mundo.", "common Spanish words"),
    ("Words: zq, the, 1998, blorp, quickly, ##ed, Paris, %, tree, an, yellowish, 7, sql, ___, mr.",
     "Cannot Tell"),
)

SCENARIO_SYSTEM = (
    "Given a concept that groups some words, say in which user tasks these words would mostly be "
    "used. Options: daily writing, literary writing, professional writing, solving math problems, "
    "coding, translation. If none applies, answer None. Several options may apply: separate them "
    "with ';'. Answer with the options only."
)
SCENARIO_SHOTS = (
    ("Concept: Words are Python programming keywords and functions", "coding"),
    ("Concept: Words are mathematics terms", "solving math problems; professional writing"),
    ("Concept: Words are common Spanish words", "translation"),
    ("Concept: Words are emotions in a story", "literary writing; daily writing"),
)

LEVEL_SYSTEM = (
    "Given a concept that groups some words, say at which linguistic level the words are related. "
    "Options: Phonology (sound, rhyme, spelling endings), Morphology (shared affixes or inflection), "
    "Syntax (grammatical role, function words), Semantic (meaning or topic). Answer with one option."
)
LEVEL_SHOTS = (
    ("Concept: Words are verbs in their -ing form", "Morphology"),
    ("Concept: Words are words rhyming with 'ight'", "Phonology"),
    ("Concept: Words are prepositions and articles", "Syntax"),
    ("Concept: Words are mathematics terms", "Semantic"),
)


def _messages(system: str, shots, user: str) -> list[dict]:
    msgs = [{"role": "system", "content": system}]
    for q, a in shots:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    msgs.append({"role": "user", "content": user})
    return msgs


def describe_messages(words: list[str]) -> list[dict]:
    return _messages(DESCRIBE_SYSTEM, DESCRIBE_SHOTS, "Words: " + ", ".join(words) + ".")


def scenario_messages(description: str) -> list[dict]:
    return _messages(SCENARIO_SYSTEM, SCENARIO_SHOTS, f"Concept: Words are {description}")


def level_messages(description: str) -> list[dict]:
    return _messages(LEVEL_SYSTEM, LEVEL_SHOTS, f"Concept: Words are {description}")
