"""The offline default annotator, named "heuristic" in every report: rules over real resources.

Each rule counts the shown words it covers; a rule fires when it covers at least half of them.
"Cannot Tell" when no rule fires. Deterministic: one repetition says everything (the statistics
then use a chi-square test of pooled counts, see concepts.py).

* morphology: a shared affix (suffix or prefix list below; inflections confirmed by lemminflect,
  whose lemma differs from the word);
* phonology: a shared ending (3-4 letters) or onset (3 letters, not a hyphenated compound) that is
  not a listed affix;
* syntax: closed-class function words;
* translation: most words not English (wordfreq: another Latin-script language uses the word at
  least 10x as often as English with zipf >= 3 there, or a non-Latin script);
* coding: Python keywords and builtins (the interpreter's own lists), identifiers with ``_``,
  camelCase or dots, and common programming terms;
* math: numbers, operators and mathematics vocabulary;
* semantic (optional, with GloVe): mean pairwise cosine of the known words >= ``semantic_threshold``.

Level: morphology > phonology > syntax > semantic (topic rules: coding, math, translation and the
GloVe rule are semantic). Scenario: coding, solving math problems, translation as their rules fire;
otherwise daily writing for an explainable English list.
"""

from __future__ import annotations

import builtins
import keyword
import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from shiftcheck.probes.ffn.annotators import Annotation, Component

SUFFIXES = ("ing", "ed", "ly", "tion", "sion", "ness", "ment", "able", "ible", "ful", "less", "ize", "ise",
            "ity", "ous", "ive", "ism", "ist", "est", "er", "es", "s", "mente", "al")
PREFIXES = ("un", "re", "pre", "dis", "non", "over", "mis", "sub", "inter", "anti", "de", "im", "in")
FUNCTION_WORDS = frozenset("""a an the this that these those my your his her its our their some any no every each
of in on at by for with about against between into through during before after above below to from up down out
off over under again further then once and but or nor so yet if because as until while although though whether
i me we us you he him she they them it who whom whose which what whoever is am are was were be been being have has
had do does did will would shall should can could may might must not than too very just also only there here""".split())
CODE_WORDS = frozenset("""def var let const function func return import export class struct enum void int str float
bool char string array list dict tuple null nil true false self this new async await yield lambda print println
printf console log json xml html css sql http https api url json numpy pandas matplotlib torch tensorflow sklearn
react node npm pip git docker kubernetes java javascript python typescript rust golang php ruby kotlin swift bash
shell linux unix regex boolean integer iterator iterate variable parameter argument compile compiler runtime debug
debugger exception stack queue pointer malloc struct namespace module package library framework method methods
callback endpoint query schema database repo github commit branch merge syntax script scripts code coding""".split())
MATH_WORDS = frozenset("""math maths mathematics mathematical equation equations formula formulas theorem proof
lemma integral integrals derivative derivatives calculus algebra algebraic geometry geometric trigonometry
polynomial polynomials matrix matrices vector vectors scalar sum sums product quotient fraction fractions
numerator denominator ratio ratios percent percentage probability statistics statistical mean median variance
deviation average logarithm exponent exponential factorial prime primes integer integers decimal decimals
digit digits number numbers numeric numerical calculate calculation calculations compute arithmetic
multiply multiplication divide division subtract subtraction addition plus minus equals equal square squared
cube root roots radius diameter angle angles triangle triangles circle area volume perimeter graph graphs axis
coordinate coordinates function linear quadratic infinity infinite limit limits solve solving solution
theta sine cosine tangent modulo parity even odd zero one two three four five six seven eight nine ten hundred
thousand million billion half twice double triple""".split())
_BUILTINS = frozenset(n.lower() for n in dir(builtins)) | frozenset(keyword.kwlist)
_OPERATORS = re.compile(r"^[\d\s.,+\-*/^=<>%()√∑∫π±×÷]+$")
_IDENT = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
FOREIGN_RATIO = 10.0  # another language uses the word at least 10x as often as English does
FOREIGN_MIN = 1e-6  # zipf >= 3 in that language: rarer forms are mostly names, acronyms and fragments
OTHER_LANGS = ("es", "fr", "de", "it", "pt", "nl", "pl", "tr", "sv", "id")  # Latin-script languages; other
# scripts are caught by the code-point test (zh/ja/ko lookups would need jieba / mecab)


def _is_code(w: str) -> bool:
    lw = w.lower()
    if lw in CODE_WORDS or w in keyword.kwlist or lw in _BUILTINS and len(lw) > 2:
        return True
    if "_" in w.strip("_") and _IDENT.match(w):
        return True
    if re.search(r"[a-z][A-Z]", w) and _IDENT.match(w):
        return True
    return bool(re.match(r"^[A-Za-z_]+\.[A-Za-z_]+", w)) or w.endswith("()") or w.endswith(".py")


def _is_math(w: str) -> bool:
    return w.lower() in MATH_WORDS or bool(_OPERATORS.match(w)) and any(c.isdigit() or c in "+-*/^=" for c in w)


def _is_foreign(w: str) -> bool:
    from wordfreq import word_frequency

    if any(ord(c) > 0x24F for c in w if c.isalpha()):  # beyond Latin Extended: another script
        return True
    lw = w.lower()
    if not lw.isalpha():
        return False
    en = word_frequency(lw, "en")
    other = max(word_frequency(lw, lang) for lang in OTHER_LANGS)
    return other >= FOREIGN_MIN and other > FOREIGN_RATIO * en


def _inflected(w: str, suffix: str) -> bool:
    if len(w) < len(suffix) + 3:
        return False
    if suffix in ("s", "es", "ed", "ing", "er", "est"):
        from lemminflect import getAllLemmas

        lemmas = {l for ls in getAllLemmas(w).values() for l in ls}
        return bool(lemmas) and any(l != w for l in lemmas)
    return True


def _best_affix(ws: list[str]) -> tuple[str, int]:
    best = ("", 0)
    for suf in SUFFIXES:
        n = sum(1 for w in ws if w.endswith(suf) and _inflected(w, suf))
        if n > best[1] or n == best[1] and len(suf) > len(best[0]):
            best = ("-" + suf, n)
    for pre in PREFIXES:
        n = sum(1 for w in ws if w.startswith(pre) and len(w) > len(pre) + 3)
        if n > best[1]:
            best = (pre + "-", n)
    return best


def _best_sound(ws: list[str]) -> tuple[str, int]:
    best = ("", 0)
    for k in (4, 3):  # two-letter endings are shared by chance too often (measured on SmolLM2's lists)
        c = Counter(w[-k:] for w in ws if len(w) > k)
        for end, n in c.items():
            if end.isalpha() and not any(end.endswith(s) or s.endswith(end) for s in SUFFIXES) and n > best[1]:
                best = ("ending -" + end, n)
    c = Counter(w[:3] for w in ws if len(w) > 4 and "-" not in w[:5])  # "well-", "self-": compounds, not sound
    for onset, n in c.items():
        if onset.isalpha() and not any(p.startswith(onset) or onset.startswith(p) for p in PREFIXES) and n > best[1]:
            best = ("onset " + onset + "-", n)
    return best


@dataclass(frozen=True)
class RuleHits:
    """Words covered per rule for one list (and the affix or sound found)."""

    n: int
    morphology: tuple[str, int]
    phonology: tuple[str, int]
    syntax: int
    coding: int
    math: int
    translation: int
    semantic: float | None  # mean pairwise GloVe cosine, None without GloVe

    def fires(self, count: int) -> bool:
        return count >= math.ceil(self.n / 2)


class HeuristicAnnotator:
    name = "heuristic"

    def __init__(self, glove: Any = None, semantic_threshold: float = 0.5) -> None:
        self.glove = glove
        self.semantic_threshold = semantic_threshold

    def hits(self, words: Sequence[str]) -> RuleHits:
        ws = [w.strip() for w in words if w.strip()]
        low = [w.lower() for w in ws]
        sem = None
        if self.glove is not None:
            known = [w for w in low if w in self.glove.key_to_index]
            if len(known) >= max(2, math.ceil(len(ws) / 2)):
                M = np.stack([self.glove[w] / (np.linalg.norm(self.glove[w]) + 1e-12) for w in known])
                C = M @ M.T
                sem = float((C.sum() - np.trace(C)) / (len(known) * (len(known) - 1)))
        return RuleHits(
            n=len(ws), morphology=_best_affix(low), phonology=_best_sound(low),
            syntax=sum(w in FUNCTION_WORDS for w in low), coding=sum(_is_code(w) for w in ws),
            math=sum(_is_math(w) for w in ws), translation=sum(_is_foreign(w) for w in ws), semantic=sem)

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
        if h.fires(h.morphology[1]):
            level, what = "Morphology", f"words sharing the affix {h.morphology[0]}"
        elif h.fires(h.phonology[1]):
            level, what = "Phonology", f"words sharing the {h.phonology[0]}"
        elif h.fires(h.syntax):
            level, what = "Syntax", "function words"
        elif topics:
            level, what = "Semantic", " and ".join(topics)
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
