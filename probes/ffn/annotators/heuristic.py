"""The offline default annotator, named "heuristic" in every report: rules over real resources.

Each rule counts the shown words it covers; a rule fires when it covers at least half of them.
"Cannot Tell" when no rule fires. Deterministic: one repetition says everything (the statistics
then use pooled counts, see concepts.py).

* morphology (lemminflect): the same inflection (past, -ing, plural, third person, comparative,
  superlative) of different lemmas, or the same derivational affix on a base that lemminflect knows
  with the right part of speech (``darkness`` = dark + -ness; ``general`` is no "gener" + -al);
* phonology (CMUdict through ``pronouncing``): the same rhyming part (``blue two shoe flew``; not
  ``cough dough through``) or the same initial consonant cluster, by pronunciation, not spelling;
* syntax: function words: half A of ``lexicons.FUNCTION_WORDS``, or (with GloVe) words whose vector
  is as close to that half's centroid as only 5 % of ordinary English words are;
* translation (wordfreq): words another language uses at least 10x as often as English (zipf >= 3
  there), or another script; level Syntax when most are among that language's most frequent words
  (its function words), else Semantic;
* coding: half A of ``lexicons.CODE_TOKENS``, Python's keywords and builtins, the keywords and
  builtins of 23 languages in Pygments' lexers (minus common English words), identifiers with
  ``_``, camelCase or dots, and (with GloVe) words near the centroid of the rare ones; never a
  function word; scenario coding;
* math: half A of ``lexicons.MATH_TERMS``, numbers and operators, and (with GloVe) words near the
  maths centroid; scenario solving math problems;
* semantic (with GloVe): mean pairwise cosine of the known words at least that of all but 0.1 % of
  random 15-word lists of ordinary English words (GloVe frequency ranks 100-20,000).

Half B of each word pool belongs to the calibration set (``calibration.py``): the heuristic reaches
it only through the rules above, never by looking it up. Level precedence: foreign function words
(Syntax) > topics (coding, maths, translation: Semantic) > syntax > morphology > phonology > GloVe
coherence (Semantic). Scenario: coding, maths, translation as their rules fire; otherwise daily
writing for an explainable English list.
"""

from __future__ import annotations

import builtins
import keyword
import math
import random
import re
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shiftcheck.probes.ffn.annotators import Annotation, Component, lexicons

# suffix -> parts of speech its base may have (lemminflect upos)
DERIVATIONS = {"ness": ("ADJ",), "ment": ("VERB",), "able": ("VERB", "NOUN"), "ible": ("VERB",),
               "less": ("NOUN",), "ful": ("NOUN",), "ly": ("ADJ",), "ity": ("ADJ",), "ist": ("NOUN",),
               "ism": ("NOUN", "ADJ"), "ship": ("NOUN",), "hood": ("NOUN",), "ize": ("NOUN", "ADJ"),
               "ise": ("NOUN", "ADJ"), "ation": ("VERB",), "ion": ("VERB",), "al": ("NOUN",), "ous": ("NOUN",),
               "ive": ("VERB",), "ish": ("ADJ", "NOUN"), "er": ("VERB",), "or": ("VERB",), "dom": ("NOUN",),
               "mente": ()}  # Spanish/Italian adverbs: no English base, marked by the suffix alone
PREFIXES = {"un": ("ADJ", "VERB"), "re": ("VERB",), "dis": ("VERB", "ADJ", "NOUN"), "mis": ("VERB",),
            "pre": ("VERB", "NOUN"), "non": ("NOUN", "ADJ"), "over": ("VERB", "ADJ"), "under": ("VERB",),
            "anti": ("NOUN", "ADJ"), "inter": ("NOUN", "ADJ"), "sub": ("NOUN",), "self": ("NOUN",)}
INFLECTIONS = {"VBD": "past", "VBN": "past", "VBG": "-ing", "VBZ": "third person -s", "NNS": "plural",
               "JJR": "comparative", "RBR": "comparative", "JJS": "superlative", "RBS": "superlative"}
_BUILTINS = frozenset(n.lower() for n in dir(builtins)) | frozenset(keyword.kwlist)
_OPERATORS = re.compile(r"^[\d\s.,+\-*/^=<>%()√∑∫π±×÷]+$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_VOWELS = frozenset("AEIOU")
FOREIGN_RATIO = 10.0  # another language uses the word at least 10x as often as English does
FOREIGN_MIN = 1e-6  # zipf >= 3 in that language: rarer forms are mostly names, acronyms and fragments
FOREIGN_FUNCTION_ZIPF = 6.1  # the ~100 most frequent words of a language: nearly all function words
# (French "donc" 5.9, "aussi" 6.2, "avec" 6.7; Spanish content words "tiempo" 6.0, "casa" 6.0)
OTHER_LANGS = ("es", "fr", "de", "it", "pt", "nl", "pl", "tr", "sv", "id")  # Latin-script languages; other
# scripts are caught by the code-point test (zh/ja/ko lookups would need jieba / mecab)
WORD_FALSE_POSITIVE = 0.05  # a centroid rule admits 5 % of ordinary English words
LIST_FALSE_POSITIVE = 0.001  # the coherence rule admits 0.1 % of random 15-word lists
CODE_NEIGHBOURS = 4  # of 10 nearest: no sampled background word had more than 3
BACKGROUND = (100, 20000)  # GloVe frequency ranks of the "ordinary English words" (its half A)
CODE_LANGS = ("python", "c", "cpp", "java", "javascript", "typescript", "go", "rust", "php", "ruby", "sql", "bash",
              "kotlin", "swift", "csharp", "scala", "perl", "lua", "r", "matlab", "haskell", "html", "css")
CODE_COMMON_ZIPF = 4.5  # Pygments keywords this frequent in English ("select", "double") are not evidence


def _half_a(pool: Sequence[str]) -> frozenset[str]:
    return frozenset(w for w in pool if lexicons.half("word:" + w) == "A")


FUNCTION_WORDS = _half_a(lexicons.FUNCTION_WORDS)
CODE_WORDS = _half_a(lexicons.CODE_TOKENS)
MATH_WORDS = _half_a(lexicons.MATH_TERMS)


def rhymes(w: str) -> frozenset[str]:
    """CMUdict rhyming parts of every pronunciation of ``w`` (empty when CMUdict lacks it)."""
    import pronouncing

    return frozenset(pronouncing.rhyming_part(p) for p in pronouncing.phones_for_word(w))


def onsets(w: str) -> frozenset[str]:
    """Initial clusters of two or more consonant phones ("S T R" in street, strong)."""
    import pronouncing

    out = set()
    for p in pronouncing.phones_for_word(w):
        ph = p.split()
        k = 0
        while k < len(ph) and ph[k][0] not in _VOWELS:
            k += 1
        if k >= 2:
            out.add(" ".join(ph[:k]))
    return frozenset(out)


def inflections(w: str) -> frozenset[str]:
    """The inflections ``w`` is of another lemma ("ran" -> past; "run" itself -> none)."""
    from lemminflect import getAllInflections, getAllLemmas

    out = set()
    for upos, lemmas in getAllLemmas(w).items():
        for lemma in lemmas:
            if lemma == w:
                continue
            for tag, forms in getAllInflections(lemma, upos=upos).items():
                if w in forms and tag in INFLECTIONS:
                    out.add(INFLECTIONS[tag])
    return frozenset(out)


def _stems(stem: str) -> list[str]:
    out = [stem, stem + "e"]
    if stem.endswith("i"):
        out.append(stem[:-1] + "y")
    if len(stem) > 2 and stem[-1] == stem[-2]:
        out.append(stem[:-1])
    if stem.endswith("ab") or stem.endswith("ib"):
        out.append(stem + "le")
    return out


def derivations(w: str) -> frozenset[str]:
    """Derivational affixes of ``w`` whose remainder is a known base of the right part of speech."""
    from lemminflect import getAllInflections

    out = set()
    for suf, upos in DERIVATIONS.items():
        if not w.endswith(suf) or len(w) < len(suf) + 3:
            continue
        if not upos:
            out.add("-" + suf)
            continue
        if any(len(b) >= 3 and any(getAllInflections(b, upos=u) for u in upos) for b in _stems(w[: -len(suf)])):
            out.add("-" + suf)
    for pre, upos in PREFIXES.items():
        base = w[len(pre):].lstrip("-")
        if w.startswith(pre) and len(base) >= 3 and any(getAllInflections(base, upos=u) for u in upos):
            out.add(pre + "-")
    return frozenset(out)


def pygments_keywords(langs: Sequence[str] = CODE_LANGS) -> frozenset[str]:
    """Keywords and builtin names of ``langs`` in Pygments' lexers, the names of every language Pygments
    knows and Python's standard-library modules, minus common English words."""
    from pygments.lexer import words
    from pygments.lexers import get_all_lexers, get_lexer_by_name
    from pygments.token import Keyword, Name
    from wordfreq import zipf_frequency

    out = set()
    for lang in langs:
        for rules in type(get_lexer_by_name(lang)).tokens.values():
            for r in rules:
                if not isinstance(r, tuple) or len(r) < 2:
                    continue
                if isinstance(r[0], words) and (r[1] in Keyword or r[1] in Name):
                    out.update(w.lower() for w in r[0].words if w.isidentifier())
                elif isinstance(r[0], str) and (r[1] in Keyword or r[1] in Name.Builtin):
                    # "(abstract|final|native)\\b": the alternatives, with the escapes dropped
                    out.update(w.lower() for w in re.findall(r"[A-Za-z_][A-Za-z0-9_]{2,}", re.sub(r"\\.", " ", r[0])))
    out.update(a.lower() for _, aliases, _, _ in get_all_lexers() for a in aliases if a.isalpha())  # languages
    out.update(m.lower() for m in sys.stdlib_module_names if m.isalpha())  # Python's standard modules
    return frozenset(w for w in out if zipf_frequency(w, "en") < CODE_COMMON_ZIPF)


def is_code(w: str, keywords: frozenset[str] = frozenset()) -> bool:
    lw = w.lower()
    if lw in CODE_WORDS or lw in keywords or w in keyword.kwlist or lw in _BUILTINS and len(lw) > 2:
        return True
    if "_" in w.strip("_") and _IDENT.match(w):
        return True
    if re.search(r"[a-z][A-Z]", w) and _IDENT.match(w):
        return True
    return bool(re.match(r"^[A-Za-z_]+\.[A-Za-z_]+", w)) or w.endswith("()") or w.endswith(".py")


def is_math(w: str) -> bool:
    return w.lower() in MATH_WORDS or bool(_OPERATORS.match(w)) and any(c.isdigit() or c in "+-*/^=" for c in w)


def foreign(w: str) -> tuple[str, float] | None:
    """(language, zipf there) when another language or script owns the word, else None."""
    from wordfreq import word_frequency, zipf_frequency

    if any(ord(c) > 0x24F for c in w if c.isalpha()):  # beyond Latin Extended: another script
        return ("other script", 0.0)
    lw = w.lower()
    if not lw.isalpha():
        return None
    en = word_frequency(lw, "en")
    lang, other = max(((l, word_frequency(lw, l)) for l in OTHER_LANGS), key=lambda t: t[1])
    if other >= FOREIGN_MIN and other > FOREIGN_RATIO * en:
        return (lang, zipf_frequency(lw, lang))
    return None


@dataclass(frozen=True)
class WordFacts:
    """What the rules know about one shown word."""

    rhymes: frozenset[str]
    onsets: frozenset[str]
    inflections: frozenset[str]
    derivations: frozenset[str]
    function: bool
    code: bool
    math: bool
    foreign: tuple[str, float] | None


@dataclass(frozen=True)
class RuleHits:
    """Words covered per rule for one list (with the shared feature found)."""

    n: int
    morphology: tuple[str, int]
    phonology: tuple[str, int]
    syntax: int
    coding: int
    math: int
    translation: int
    foreign_function: int
    semantic: float | None  # mean pairwise GloVe cosine, None without GloVe or too few known words

    def fires(self, count: int) -> bool:
        return count >= math.ceil(self.n / 2)


def _best(counter: Counter, what: str) -> tuple[str, int]:
    if not counter:
        return ("", 0)
    key, n = max(counter.items(), key=lambda kv: (kv[1], kv[0]))
    return (f"{what} {key}", n)


@dataclass(frozen=True)
class GloveRules:
    """Thresholds measured on GloVe's own ordinary words (frequency ranks 1000-30000, half A)."""

    centroids: dict[str, np.ndarray]  # category -> unit centroid of its half-A words
    word_threshold: dict[str, float]  # category -> cosine admitting WORD_FALSE_POSITIVE of background words
    coherence_threshold: float  # mean pairwise cosine admitting LIST_FALSE_POSITIVE of random lists
    neighbours: np.ndarray  # unit vectors of code seeds, maths and function words and background words
    is_code_seed: np.ndarray  # bool per row of ``neighbours``


def _unit(v: np.ndarray) -> np.ndarray:
    return v / (np.linalg.norm(v) + 1e-12)


def glove_rules(glove: Any, code_keywords: frozenset[str], seed: int = 0) -> GloveRules:
    from wordfreq import zipf_frequency

    # code seeds: only code-specific tokens; "for", "list", "class" would pull the centroid to English
    code = frozenset(w for w in CODE_WORDS | code_keywords if zipf_frequency(w, "en") < 3.5)
    pools = {"syntax": FUNCTION_WORDS, "math": MATH_WORDS}
    lo, hi = BACKGROUND
    first = min(glove.key_to_index.values())  # the packaged loader's indices start after empty slots
    ranked = [w for w, i in glove.key_to_index.items() if lo <= i - first < hi]
    seeds = sorted(w for w in code | MATH_WORDS | FUNCTION_WORDS if w in glove.key_to_index)
    bg_words = [w for w in sorted(ranked, key=glove.key_to_index.get) if w.isalpha()
                and lexicons.half("bg:" + w) == "A" and w not in seeds]
    bg = np.stack([_unit(glove[w]) for w in bg_words])
    centroids, thresholds = {}, {}
    for cat, pool in pools.items():
        known = sorted(w for w in pool if w in glove.key_to_index)
        c = _unit(np.mean([_unit(glove[w]) for w in known], axis=0))
        centroids[cat] = c
        thresholds[cat] = float(np.quantile(bg @ c, 1 - WORD_FALSE_POSITIVE))
    rng = random.Random(seed)
    coh = [_coherence(bg[rng.sample(range(len(bg)), 15)]) for _ in range(3000)]
    neighbours = np.concatenate([np.stack([_unit(glove[w]) for w in seeds]), bg])
    is_seed = np.array([w in code for w in seeds] + [False] * len(bg))
    return GloveRules(centroids, thresholds, float(np.quantile(coh, 1 - LIST_FALSE_POSITIVE)), neighbours, is_seed)


def _coherence(M: np.ndarray) -> float:
    C = M @ M.T
    k = len(M)
    return float((C.sum() - np.trace(C)) / (k * (k - 1)))


class HeuristicAnnotator:
    name = "heuristic"

    def __init__(self, glove: Any = None, semantic_threshold: float | None = None) -> None:
        self.glove = glove
        self.code_keywords = pygments_keywords()
        self.rules = glove_rules(glove, self.code_keywords) if glove is not None else None
        self.semantic_threshold = semantic_threshold if semantic_threshold is not None else (
            self.rules.coherence_threshold if self.rules else math.inf)
        self._facts: dict[str, WordFacts] = {}  # per instance: the rules are pure functions of the word

    def _code_neighbours(self, lw: str) -> bool:
        """At least CODE_NEIGHBOURS of the word's 10 nearest GloVe neighbours are code seeds."""
        if self.rules is None or lw not in self.glove.key_to_index:
            return False
        sims = self.rules.neighbours @ _unit(self.glove[lw])
        top = np.argsort(-sims)[1:11]  # [0] is the word itself when it is a seed or background word
        return int(self.rules.is_code_seed[top].sum()) >= CODE_NEIGHBOURS

    def _near(self, lw: str, cat: str) -> bool:
        if self.rules is None or lw not in self.glove.key_to_index:
            return False
        return float(_unit(self.glove[lw]) @ self.rules.centroids[cat]) >= self.rules.word_threshold[cat]

    def facts(self, w: str) -> WordFacts:
        hit = self._facts.get(w)
        if hit is None:
            lw = w.lower()
            alpha = lw.isalpha()
            function = lw in FUNCTION_WORDS or self._near(lw, "syntax")
            other = foreign(w)
            plain = not function and other is None  # function and foreign words are never code or maths
            hit = WordFacts(
                rhymes=rhymes(lw) if alpha else frozenset(), onsets=onsets(lw) if alpha else frozenset(),
                inflections=inflections(lw) if alpha else frozenset(),
                derivations=derivations(lw) if alpha else frozenset(),
                function=function,
                code=plain and (is_code(w, self.code_keywords) or self._code_neighbours(lw)),
                math=plain and (is_math(w) or self._near(lw, "math")), foreign=other)
            self._facts[w] = hit
        return hit

    def hits(self, words: Sequence[str]) -> RuleHits:
        ws = [w.strip() for w in words if w.strip()]
        fs = [self.facts(w) for w in ws]
        foreign_words = [f for f in fs if f.foreign]
        # a foreign list is a translation list, whatever its English look-alikes rhyme or inflect like
        english = [f for f in fs if not f.foreign]
        morph = Counter(k for f in english for k in f.inflections | f.derivations)
        sound = Counter("rhyme " + k for f in english for k in f.rhymes) + \
            Counter("onset " + k for f in english for k in f.onsets)
        inflected = {k for f in english for k in f.inflections}
        key, n_m = _best(morph, "")
        best_m = (("inflection" if key.strip() in inflected else "affix") + key, n_m)
        sem = None
        if self.glove is not None:
            known = [w.lower() for w in ws if w.lower() in self.glove.key_to_index]
            if len(known) >= max(2, math.ceil(len(ws) / 2)):
                sem = _coherence(np.stack([_unit(self.glove[w]) for w in known]))
        return RuleHits(
            n=len(ws), morphology=best_m, phonology=_best(sound, "the"),
            syntax=sum(f.function and not f.foreign for f in fs), coding=sum(f.code for f in fs),
            math=sum(f.math for f in fs), translation=len(foreign_words),
            foreign_function=sum(f.foreign[1] >= FOREIGN_FUNCTION_ZIPF for f in foreign_words), semantic=sem)

    def label(self, comp: Component) -> Annotation:
        h = self.hits(comp.words)
        if h.n == 0:
            return Annotation(comp.layer, comp.rank, comp.words, "Cannot Tell")
        scen, topics = [], []
        if h.fires(h.coding):
            scen.append("coding")
            topics.append("programming tokens")
        if h.fires(h.math):
            scen.append("solving math problems")
            topics.append("mathematics")
        if h.fires(h.translation):
            scen.append("translation")
            topics.append("non-English words")
        # topics first: maths terms are often plurals, yet the paper's annotator calls them Semantic
        if h.fires(h.translation) and h.fires(h.foreign_function):
            level, what = "Syntax", "function words of another language"
        elif topics:
            level, what = "Semantic", " and ".join(topics)
        elif h.fires(h.syntax):  # before morphology: auxiliaries (has, did, being) are inflections too
            level, what = "Syntax", "function words"
        elif h.fires(h.morphology[1]):
            level, what = "Morphology", f"words sharing the {h.morphology[0]}"
        elif h.fires(h.phonology[1]):
            level, what = "Phonology", f"words sharing {h.phonology[0]} (CMUdict pronunciation)"
        elif h.semantic is not None and h.semantic >= self.semantic_threshold:
            level, what = "Semantic", f"related in meaning (mean GloVe cosine {h.semantic:.2f})"
        else:
            return Annotation(comp.layer, comp.rank, comp.words, "Cannot Tell")
        if not scen:
            scen.append("daily writing")
        return Annotation(comp.layer, comp.rank, comp.words, what, "; ".join(scen), level)

    def annotate(self, components: Sequence[Component], repetitions: int) -> list[list[Annotation]]:
        """Deterministic: one repetition, whatever ``repetitions`` asks (the report says so)."""
        return [[self.label(c) for c in components]]
