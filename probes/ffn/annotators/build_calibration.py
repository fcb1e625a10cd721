"""Build the annotator calibration set (issue 19): constructed 15-word components with a known
linguistic level and scenario, plus random lists that no annotator should explain.

    python -m shiftcheck.probes.ffn.annotators.build_calibration [--out probes/data/calibration/calibration_set.json]

Deterministic (fixed seed, sorted inputs, sha256 splits): the same package versions give the same
bytes. Groups (the sizes are ``GROUP_SIZES``):

* phonology: rhyme groups of CMUdict (``pronouncing.rhyming_part``) whose rhyming part falls in
  half B; base forms only (lemminflect), and spelled differently: no three-letter ending covers
  more than ``MAX_SAME_ENDING`` and no two-letter ending more than 7 of the 15 words, so a
  spelling rule cannot find them; few rhyme groups qualify, so each gives several samples;
* morphology, inflection: one Penn tag per item (past, -ing, plural, 3rd person, comparative),
  forms from lemminflect ``getInflection`` of lemmas in half B;
* morphology, derivation: one derivational suffix per item, each word a lemminflect base in half B
  plus the suffix (with English spelling changes);
* syntax: function words of half B of ``lexicons.FUNCTION_WORDS``;
* semantic, writing: hand-written topical clusters (``lexicons.TOPICS``);
* semantic, coding / math: half B of ``lexicons.CODE_TOKENS`` / ``lexicons.MATH_TERMS``, minus
  anything the heuristic's half or Python's keyword and builtin lists contain;
* translation: hand-written common words of six languages (``lexicons.FOREIGN``), one language
  per item (level not scored: a foreign list can be syntax or semantic);
* cannot tell: 15 random English words of frequency rank 200-20,000 (wordfreq).

Lemma, rhyme and word halves are ``lexicons.half(kind + ":" + key)``.
"""

from __future__ import annotations

import argparse
import builtins
import hashlib
import json
import keyword
import random
from collections import defaultdict
from pathlib import Path

from shiftcheck.probes.ffn.annotators import lexicons

SHOWN = 15
SEED = 20231001
MAX_SAME_ENDING = 5
MIN_ZIPF = 3.0
GROUP_SIZES = {"phonology": 40, "inflection": 20, "derivation": 20, "syntax": 40, "topic": 40, "coding": 20,
               "math": 20, "translation": 24, "random": 40}
INFLECTION_TAGS = ("VBD", "VBG", "NNS", "VBZ", "JJR")
# suffix -> the part of speech of its base (lemminflect upos)
DERIVATIONS = {"ness": "ADJ", "ment": "VERB", "able": "VERB", "less": "NOUN", "ful": "NOUN", "ly": "ADJ",
               "ity": "ADJ", "ist": "NOUN", "ship": "NOUN"}
DEFAULT_OUT = Path(__file__).resolve().parents[2] / "data" / "calibration" / "calibration_set.json"


def _english(n: int = 40000) -> list[str]:
    from wordfreq import top_n_list

    return [w for w in top_n_list("en", n) if w.isalpha() and w.isascii() and w.islower() and len(w) >= 3]


def _is_base(w: str) -> bool:
    """A dictionary word in its base form: lemminflect knows it (no names) and it is its own lemma."""
    from lemminflect import getAllLemmas

    return w in {l for ls in getAllLemmas(w).values() for l in ls}


def phonology_items(rng: random.Random, common: list[str], n: int) -> list[dict]:
    import pronouncing

    groups: dict[str, list[str]] = defaultdict(list)
    for w in common:
        if not _is_base(w):
            continue
        parts = {pronouncing.rhyming_part(p) for p in pronouncing.phones_for_word(w)}
        for part in sorted(parts):
            if lexicons.half("rhyme:" + part) == "B":
                groups[part].append(w)
    usable = [(part, sorted(ws)) for part, ws in sorted(groups.items())
              if "1" in part.split()[0] and _spelled_apart(random.Random(0), sorted(ws))]
    rng.shuffle(usable)  # secondary-stress parts (above: skipped) are mostly the "-y" ending
    items = []
    for k in range(n):  # more items than rhyme groups: a group gives several different samples
        part, words = usable[k % len(usable)]
        items.append({"group": "phonology", "words": _spelled_apart(rng, words), "level": "phonology",
                      "scenario": "writing", "source": f"CMUdict rhyming part {part}"})
    return items


def _spelled_apart(rng: random.Random, words: list[str]) -> list[str] | None:
    """15 of ``words`` in random order, no 3-letter ending more than MAX_SAME_ENDING times and no
    2-letter ending more than 7 times (fewer than half): spelling alone cannot group them."""
    order = rng.sample(words, len(words))
    picked: list[str] = []
    for w in order:
        if sum(p[-3:] == w[-3:] for p in picked) < MAX_SAME_ENDING and \
                sum(p[-2:] == w[-2:] for p in picked) < SHOWN // 2:
            picked.append(w)
        if len(picked) == SHOWN:
            return picked
    return None


def inflection_items(rng: random.Random, common: list[str], n: int) -> list[dict]:
    from lemminflect import getAllLemmas, getInflection
    from wordfreq import zipf_frequency

    upos = {"VBD": "VERB", "VBG": "VERB", "VBZ": "VERB", "NNS": "NOUN", "JJR": "ADJ"}
    forms: dict[str, list[str]] = {t: [] for t in INFLECTION_TAGS}
    for w in common:
        if lexicons.half("lemma:" + w) != "B":
            continue
        lemmas = getAllLemmas(w)
        for tag in INFLECTION_TAGS:
            if w not in lemmas.get(upos[tag], ()):
                continue
            got = getInflection(w, tag)
            if got and got[0] != w and got[0].isalpha() and zipf_frequency(got[0], "en") >= MIN_ZIPF - 0.5:
                forms[tag].append(got[0])
    items = []
    for k in range(n):
        tag = INFLECTION_TAGS[k % len(INFLECTION_TAGS)]
        pool = sorted(set(forms[tag]))
        items.append({"group": "inflection", "words": rng.sample(pool, SHOWN), "level": "morphology",
                      "scenario": "writing", "source": f"lemminflect inflection {tag} of half-B lemmas"})
    return items


def _bases(word: str, suffix: str) -> list[str]:
    stem = word[: -len(suffix)]
    out = [stem, stem + "e"]
    if stem.endswith("i"):
        out.append(stem[:-1] + "y")
    if len(stem) > 2 and stem[-1] == stem[-2]:
        out.append(stem[:-1])
    if suffix == "ly" and stem.endswith("ab"):
        out.append(stem + "le")  # possibly -> possible
    return out


def derivation_base(word: str, suffix: str, upos: str) -> str | None:
    """The base a derived word is made of (``darkness`` -> ``dark``), or None. Shared with the heuristic."""
    from lemminflect import getAllInflections

    if not word.endswith(suffix) or len(word) < len(suffix) + 3:
        return None
    for base in _bases(word, suffix):
        if len(base) >= 3 and getAllInflections(base, upos=upos):
            return base
    return None


def derivation_items(rng: random.Random, common: list[str], n: int) -> list[dict]:
    from wordfreq import zipf_frequency

    pools: dict[str, list[str]] = {s: [] for s in DERIVATIONS}
    for w in common:
        for suf, upos in DERIVATIONS.items():
            base = derivation_base(w, suf, upos)
            if base and len(base) >= 4 and lexicons.half("lemma:" + base) == "B" \
                    and zipf_frequency(base, "en") >= MIN_ZIPF:
                pools[suf].append(w)
    sufs = sorted(s for s in DERIVATIONS if len(set(pools[s])) >= SHOWN + 3)
    items = []
    for k in range(n):
        suf = sufs[k % len(sufs)]
        items.append({"group": "derivation", "words": rng.sample(sorted(set(pools[suf])), SHOWN),
                      "level": "morphology", "scenario": "writing",
                      "source": f"derivation -{suf} on half-B lemminflect {DERIVATIONS[suf]} bases"})
    return items


def _half_b(pool: tuple[str, ...], exclude: frozenset[str]) -> list[str]:
    return sorted(w for w in pool if lexicons.half("word:" + w) == "B" and w not in exclude)


def pool_items(rng: random.Random, pool: list[str], n: int, group: str, level: str | None, scenario: str,
               source: str) -> list[dict]:
    return [{"group": group, "words": rng.sample(pool, SHOWN), "level": level, "scenario": scenario,
             "source": source} for _ in range(n)]


def build(seed: int = SEED) -> dict:
    rng = random.Random(seed)
    common = [w for w in _english() if len(w) >= 3]
    from wordfreq import zipf_frequency

    # rhymes need a wider vocabulary than the other groups to find 40 spelling-diverse rhyme groups
    rhyming = [w for w in common if zipf_frequency(w, "en") >= MIN_ZIPF - 0.5]
    common = [w for w in common if zipf_frequency(w, "en") >= MIN_ZIPF]
    python_names = frozenset(n.lower() for n in dir(builtins)) | frozenset(keyword.kwlist)
    heuristic_half = frozenset(w for p in (lexicons.CODE_TOKENS, lexicons.MATH_TERMS, lexicons.FUNCTION_WORDS)
                               for w in p if lexicons.half("word:" + w) == "A")
    items: list[dict] = []
    items += phonology_items(rng, rhyming, GROUP_SIZES["phonology"])
    items += inflection_items(rng, common, GROUP_SIZES["inflection"])
    items += derivation_items(rng, common, GROUP_SIZES["derivation"])
    items += pool_items(rng, _half_b(lexicons.FUNCTION_WORDS, heuristic_half), GROUP_SIZES["syntax"], "syntax",
                        "syntax", "writing", "half B of lexicons.FUNCTION_WORDS")
    topics = sorted(lexicons.TOPICS)
    for k in range(GROUP_SIZES["topic"]):
        t = topics[k % len(topics)]
        items.append({"group": "topic", "words": rng.sample(lexicons.TOPICS[t].split(), SHOWN), "level": "semantic",
                      "scenario": "writing", "source": f"lexicons.TOPICS[{t}]"})
    items += pool_items(rng, _half_b(lexicons.CODE_TOKENS, heuristic_half | python_names), GROUP_SIZES["coding"],
                        "coding", "semantic", "coding", "half B of lexicons.CODE_TOKENS")
    items += pool_items(rng, _half_b(lexicons.MATH_TERMS, heuristic_half), GROUP_SIZES["math"], "math",
                        "semantic", "math", "half B of lexicons.MATH_TERMS")
    langs = sorted(lexicons.FOREIGN)
    for k in range(GROUP_SIZES["translation"]):
        lang = langs[k % len(langs)]
        items.append({"group": "translation", "words": rng.sample(lexicons.FOREIGN[lang].split(), SHOWN),
                      "level": None, "scenario": "translation", "source": f"lexicons.FOREIGN[{lang}]"})
    rare = [w for w in _english(20000)[200:]]
    items += [{"group": "random", "words": rng.sample(rare, SHOWN), "level": None, "scenario": None,
               "source": "random English words, wordfreq rank 200-20000"} for _ in range(GROUP_SIZES["random"])]
    for i, it in enumerate(items):
        it["id"] = f"{it['group']}-{i:03d}"
        it["explainable"] = it["group"] != "random"
    sizes: dict[str, int] = defaultdict(int)
    for it in items:
        sizes[it["group"]] += 1
    short = {g: GROUP_SIZES[g] - sizes.get(g, 0) for g in GROUP_SIZES if sizes.get(g, 0) < GROUP_SIZES[g]}
    if short:
        raise RuntimeError(f"calibration set: too few candidates for {short}")
    return {"version": 1, "seed": seed, "split_salt": lexicons.SPLIT_SALT, "sizes": dict(sizes),
            "digest": items_digest(items), "items": items}


def items_digest(items: list[dict]) -> str:
    blob = json.dumps(items, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--seed", type=int, default=SEED)
    args = ap.parse_args(argv)
    data = build(args.seed)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(data, ensure_ascii=False, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    print(f"{args.out}: {len(data['items'])} items {data['sizes']} digest {data['digest']}")


if __name__ == "__main__":
    main()
