"""Diversity of generated instructions: leading verbs and verb-noun pairs, as Self-Instruct plots.

Self-Instruct (Wang et al. 2023, Figure 2) parsed each instruction with a constituency parser and
counted its root verb and that verb's first direct-object noun; the top 20 verbs with their top 4
nouns show how varied the data is. No parser or tagger model can be downloaded here (NLTK's
tagger data is not installed), so this module uses a documented rule-based stand-in that works
offline and is deterministic:

1. Split the instruction into clauses at sentence ends (``.!?;:``) and commas.
2. In each clause, in order, skip leading fillers ("please", "now", "and", ...) and "-ly" adverbs
   (not "reply", "apply", ...). If the next word
   is a function word (a question word, an auxiliary or modal, a pronoun, a determiner, a
   preposition or a conjunction: "Given a list, ...", "You are given ...", "What is ..."), the
   clause has no imperative verb: try the next clause. Otherwise that word is the verb.
   Request frames are dropped first ("Can you give ...", "You need to write ...").
3. The object phrase starts at the first later word of the clause that is not a determiner,
   number, pronoun, common adjective (a small list), "-ly" adverb or possessive (a verb particle
   right after the verb is skipped too: "come up with a name"). A preposition, conjunction or
   question word first means the object is not a noun phrase ("Explain why ...", "Translate it
   into ..."): no noun. The phrase runs for up to 4 words, until a function word or an "-ing" /
   "-ed" word, and its last word is the noun (the head of a noun compound: "a grocery list for"
   -> "list"; "a list of X" -> "list", as a parser's head noun would be). Plural nouns are
   singularized by suffix rules ("stories" -> "story", "words" -> "word"; not "analysis").

Limits: with no part-of-speech tagging, a word is taken as the verb by position only (so an
instruction starting with a noun, "Story about a dog", yields verb "story"); adjectives missing
from the list are taken as the noun ("Write a haunting story" -> "haunting"); questions and
instructions whose command comes after a long clause without a comma yield no verb. The counts
are for comparing methods with the same rules, not for linguistic claims.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

import pandas as pd

_CLAUSE = re.compile(r"[.!?;:,\n]+")
_WORD = re.compile(r"[a-z][a-z'-]*|\d+")


def _set(words: str) -> frozenset[str]:
    return frozenset(words.split())


FILLERS = _set(
    "please now also then next first finally simply just kindly briefly quickly carefully "
    "again additionally lastly and but so"
)
#: verbs that end in "ly" (other leading "-ly" words are skipped as adverbs)
LY_VERBS = _set("reply apply supply multiply imply comply rely fly bully tally rally")
QUESTION_WORDS = _set("what which who whom whose when where why how whether")
AUXILIARIES = _set(
    "is are was were am be been being do does did can could would should will shall may might "
    "must have has had isn't aren't don't doesn't can't won't"
)
PRONOUNS = _set(
    "i me my mine myself you your yours yourself we us our ours they them their theirs he him "
    "his she her hers its itself this that these those there here"
)
#: pronoun objects: the verb's object is not a noun ("Translate it", "Make up something")
PRONOUN_OBJECTS = _set("it one someone something anyone anything everyone everything nothing")
DETERMINERS = _set(
    "a an the some any each every all both either neither no another other such few several "
    "many much more most less least own"
)
PREPOSITIONS = _set(
    "of in on at to for from by with without about into onto over under between among through "
    "during before after above below against across along around behind beyond near per than "
    "like as via upon within"
)
CONJUNCTIONS = _set("and or but nor so yet if because although though unless while")
#: words that start a clause but are not imperative verbs ("Given ...", "Based on ...")
CLAUSE_OPENERS = _set("given based using according assuming considering")
PARTICLES = _set("up out down off back together away forward")
NUMBER_WORDS = _set(
    "zero one two three four five six seven eight nine ten eleven twelve fifteen twenty thirty "
    "hundred thousand first second third fourth fifth last single couple"
)
ADJECTIVES = _set(
    "short long brief new old good bad best better great simple complex detailed creative "
    "different similar same various random famous common popular important interesting funny "
    "new short positive negative main key given following above below entire whole full "
    "possible potential appropriate suitable relevant specific general basic concise clear "
    "original formal informal professional personal polite catchy unique small large big high "
    "low little easy hard difficult healthy quick real true false correct incorrect english "
    "french spanish german chinese technical persuasive descriptive informative "
    "humorous fictional hypothetical imaginary several additional alternative appropriate "
    "single multiple own top recent modern traditional"
)
_NOT_VERBS = (
    QUESTION_WORDS
    | AUXILIARIES
    | PRONOUNS
    | DETERMINERS
    | PREPOSITIONS
    | CONJUNCTIONS
    | CLAUSE_OPENERS
    | NUMBER_WORDS
    | PRONOUN_OBJECTS
    | frozenset(["not", "yes", "no"])
)
_SKIP_BEFORE_NOUN = DETERMINERS | NUMBER_WORDS | ADJECTIVES | PARTICLES | PRONOUNS
_STOP_NOUN_SEARCH = (
    PREPOSITIONS | CONJUNCTIONS | QUESTION_WORDS | AUXILIARIES | PRONOUN_OBJECTS | {"not", "to"}
)
_ENDS_PHRASE = _STOP_NOUN_SEARCH | DETERMINERS | PRONOUNS | PARTICLES | CLAUSE_OPENERS
#: words a noun phrase may hold after its first (its head is the last: "a grocery list" -> list)
MAX_PHRASE = 4
_KEEP_S = ("ss", "us", "is", "as", "ics", "news", "series", "species", "ous")
#: request frames before the command: "Can you give ...", "You need to write ...", "I want you to"
_REQUEST = re.compile(
    r"^(?:(?:can|could|would|will) you (?:please )?"
    r"|(?:you|we|i) (?:need|have|want|should|must|will need|are asked|are required|would like)"
    r" (?:you )?to )"
)


def singular(noun: str) -> str:
    """A rule-based singular: "stories" -> "story", "boxes" -> "box", "words" -> "word"."""
    if len(noun) <= 3 or noun.endswith(_KEEP_S):
        return noun
    if noun.endswith("ies") and len(noun) > 4:
        return noun[:-3] + "y"
    if noun.endswith(("ches", "shes", "xes", "sses", "zes")):
        return noun[:-2]
    if noun.endswith("s"):
        return noun[:-1]
    return noun


def _words(clause: str) -> list[str]:
    return _WORD.findall(clause.lower())


def _adverb(word: str) -> bool:
    return len(word) > 4 and word.endswith("ly") and word not in LY_VERBS


def _noun_after(words: list[str]) -> str | None:
    """The head noun of the object phrase at the start of `words` (the words after the verb)."""
    k = 0
    if k < len(words) and words[k] in PARTICLES:  # "come up (with)", "write down", "point out"
        k += 1
        if k < len(words) and words[k] == "with":
            k += 1
    while k < len(words) and (
        words[k] in _SKIP_BEFORE_NOUN or words[k].isdigit() or words[k].endswith(("ly", "'s"))
    ):
        k += 1
    if k >= len(words) or words[k] in _STOP_NOUN_SEARCH:
        return None
    phrase = [words[k]]
    for w in words[k + 1 : k + MAX_PHRASE]:
        if w in _ENDS_PHRASE or w.isdigit() or (len(w) > 4 and w.endswith(("ing", "ed", "ly"))):
            break
        phrase.append(w)
    return singular(phrase[-1])


def verb_noun(instruction: str) -> tuple[str | None, str | None]:
    """The leading verb of an instruction and its object noun (see the module docstring).

    Returns:
        (verb, noun); verb None when no clause starts with an imperative verb, noun None when
        the verb has no noun object in its clause.
    """
    for clause in _CLAUSE.split(instruction):
        words = _words(clause)
        while True:  # drop fillers, "-ly" adverbs and request frames until none is left
            before = len(words)
            while words and (words[0] in FILLERS or _adverb(words[0])):
                words = words[1:]
            words = _REQUEST.sub("", " ".join(words), count=1).split()
            if len(words) == before:
                break
        if not words:
            continue
        verb = words[0]
        if verb in _NOT_VERBS or verb.isdigit() or "'" in verb:
            continue
        return verb, _noun_after(words[1:])
    return None, None


def verb_noun_frame(instructions: Iterable[str]) -> pd.DataFrame:
    """One row per instruction: instruction, verb, noun (None where not found)."""
    rows = [(t, *verb_noun(t)) for t in instructions]
    return pd.DataFrame(rows, columns=["instruction", "verb", "noun"])


def top_verb_nouns(frame: pd.DataFrame, top_verbs: int = 20, top_nouns: int = 4) -> pd.DataFrame:
    """Self-Instruct's Figure-2 data: the `top_verbs` commonest verbs (of instructions with a
    verb and a noun) and, for each, its `top_nouns` commonest nouns.

    Returns:
        Rows verb, noun, count (verbs by total count, nouns by count; ties alphabetical), plus
        verb_count (the verb's total over all its nouns).
    """
    cols = ["verb", "noun", "count", "verb_count"]
    pairs = frame.dropna(subset=["verb", "noun"]) if not frame.empty else frame
    if pairs.empty:
        return pd.DataFrame(columns=cols)
    verb_counts = Counter(pairs["verb"])
    verbs = sorted(verb_counts, key=lambda v: (-verb_counts[v], v))[:top_verbs]
    rows = []
    for v in verbs:
        nouns = Counter(pairs.loc[pairs["verb"] == v, "noun"])
        for n in sorted(nouns, key=lambda x: (-nouns[x], x))[:top_nouns]:
            rows.append((v, n, nouns[n], verb_counts[v]))
    return pd.DataFrame(rows, columns=cols)


def distinct_ngrams(texts: Sequence[str], n: int) -> float:
    """Distinct-n: distinct word n-grams over all n-grams of `texts` (lowercased words)."""
    grams: list[tuple[str, ...]] = []
    for t in texts:
        w = _words(t)
        grams += [tuple(w[i : i + n]) for i in range(len(w) - n + 1)]
    return len(set(grams)) / len(grams) if grams else 0.0


def diversity_summary(instructions: Sequence[str]) -> dict[str, Any]:
    """Diversity statistics of a set of instructions.

    Returns:
        instructions; with_verb / with_pair (fractions having a verb / a verb and a noun);
        distinct_verbs, distinct_pairs; verbs_per_100 (distinct verbs per 100 instructions);
        top_verb and top_verb_share (its share of instructions with a verb); distinct_1,
        distinct_2 (distinct-n over the instructions' words).
    """
    instructions = list(instructions)
    frame = verb_noun_frame(instructions)
    n = len(frame)
    verbs = frame["verb"].dropna()
    pairs = frame.dropna(subset=["verb", "noun"])
    counts = Counter(verbs)
    top = min(counts, key=lambda v: (-counts[v], v)) if counts else None
    return {
        "instructions": n,
        "with_verb": len(verbs) / n if n else 0.0,
        "with_pair": len(pairs) / n if n else 0.0,
        "distinct_verbs": len(counts),
        "distinct_pairs": len(set(zip(pairs["verb"], pairs["noun"], strict=True))),
        "verbs_per_100": 100 * len(counts) / n if n else 0.0,
        "top_verb": top,
        "top_verb_share": counts[top] / len(verbs) if top else 0.0,
        "distinct_1": distinct_ngrams(instructions, 1),
        "distinct_2": distinct_ngrams(instructions, 2),
    }


__all__ = [
    "diversity_summary",
    "distinct_ngrams",
    "singular",
    "top_verb_nouns",
    "verb_noun",
    "verb_noun_frame",
]
