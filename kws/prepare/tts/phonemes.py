"""Words compared by sound, with espeak-ng's phonemes: the homophones of the keywords (never `unknown`, never
in a stream's sentences: they would teach or test that the keyword is something else) and the confusable
words that share a keyword's sounds ("go" -> "goal", "gold"), the hard negatives of the `unknown` class.

Each word is phonemized alone, as a sentence of its own (`word.` on its own line), so espeak-ng neither
reduces a function word ("to" -> /tə/) nor runs it into its neighbours; all words go through one espeak-ng
call per accent (about 0.6 ms a word). A pronunciation is the IPA without stress, length and joiner marks.
Two words sound the same when their pronunciations are equal in either accent: en-gb merges "four" and
"for" (/fɔː/), en-us "one" and "won" (/wʌn/).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor

from kws.errors import KWSError
from kws.prepare.tts.voices import ESPEAK, INSTALL_HINT

ACCENTS = ("en-us", "en-gb")  # the pronunciations compared; a homophone in either counts
IGNORED = str.maketrans("", "", "ˈˌː\u200d -_")  # stress, length, joiners, word breaks of a phrase
# Confusables: a candidate whose pronunciation starts with the keyword's scores half the share of its extra
# sounds ("go" /ɡoʊ/ -> "goal" /ɡoʊl/: 0.125); any other scores its edit distance over the longer length
# ("yes" /jɛs/ -> "yet" /jɛt/: 0.33). At most MAX_CONFUSION, best first, CONFUSABLES_PER_KEYWORD a keyword.
MAX_CONFUSION = 0.34
CONFUSABLES_PER_KEYWORD = 4

Pronunciation = tuple[str, ...]  # one string per accent of ACCENTS


def phonemize(words: Sequence[str], accent: str) -> list[str]:
    """The IPA of each word spoken alone in `accent`, marks removed (`pronunciations` for both accents)."""
    if not words:
        return []
    text = "".join(f"{w}.\n" for w in words)
    lines = _espeak_ipa(text, accent)
    if len(lines) != len(words):  # never seen with validated words; stay correct if espeak-ng splits one
        lines = [" ".join(_espeak_ipa(f"{w}.\n", accent)) for w in words]
    return [line.translate(IGNORED) for line in lines]


def _espeak_ipa(text: str, accent: str) -> list[str]:
    cmd = [ESPEAK, "-q", "--ipa", "-v", accent, "--stdin"]
    try:
        proc = subprocess.run(cmd, input=text.encode(), capture_output=True, check=False)
    except FileNotFoundError:
        raise KWSError(f"espeak-ng is not installed; {INSTALL_HINT}") from None
    if proc.returncode != 0:
        err = proc.stderr.decode(errors="replace").strip()
        raise KWSError(f"espeak-ng could not phonemize words ({' '.join(cmd)}): {err}")
    return [line.strip() for line in proc.stdout.decode(errors="replace").splitlines() if line.strip()]


_known: dict[str, Pronunciation] = {}  # this process's pronunciations so far (nothing is kept on disk)


def pronunciations(words: Iterable[str]) -> dict[str, Pronunciation]:
    """word -> its pronunciation in each accent of ACCENTS (the accents run in parallel)."""
    wanted = set(words)
    new = sorted(wanted - _known.keys())
    if new:
        with ThreadPoolExecutor(len(ACCENTS)) as pool:  # espeak-ng runs as a subprocess: threads suffice
            per_accent = list(pool.map(lambda accent: phonemize(new, accent), ACCENTS))
        _known.update({w: tuple(p[i] for p in per_accent) for i, w in enumerate(new)})
    return {w: _known[w] for w in sorted(wanted)}


def same_sound(a: Pronunciation, b: Pronunciation) -> bool:
    return any(x == y and x for x, y in zip(a, b, strict=True))


def edit_distance(a: str, b: str) -> int:
    """Levenshtein distance between two phoneme strings (one edit per IPA code point)."""
    row = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        prev, row[0] = row[0], i
        for j, cb in enumerate(b, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (ca != cb))
    return row[-1]


def confusion(keyword: Pronunciation, candidate: Pronunciation) -> float:
    """How much the candidate sounds like the keyword, 0 (the same) to 1, the best over the accents."""
    scores = []
    for k, c in zip(keyword, candidate, strict=True):
        if not k or not c:
            continue
        longer = max(len(k), len(c))
        if c.startswith(k):
            scores.append(0.5 * (len(c) - len(k)) / len(c))
        elif abs(len(k) - len(c)) <= MAX_CONFUSION * longer:  # else too far: edit distance >= length gap
            scores.append(edit_distance(k, c) / longer)
    return min(scores, default=1.0)


def homophone_of(word: str, keywords: Sequence[str], prons: dict[str, Pronunciation]) -> str | None:
    """The first keyword that `word` is, or sounds the same as; None when there is none."""
    for keyword in keywords:
        if word == keyword or same_sound(prons[word], prons[keyword]):
            return keyword
    return None


def confusables(
    keywords: Sequence[str],
    candidates: Sequence[str],
    prons: dict[str, Pronunciation],
    per_keyword: int = CONFUSABLES_PER_KEYWORD,
) -> dict[str, tuple[str, ...]]:
    """keyword -> up to `per_keyword` candidates that sound most like it (MAX_CONFUSION at most), best
    first; never a keyword or a homophone of one. `prons` must hold every keyword and candidate."""
    allowed = [c for c in sorted(set(candidates)) if homophone_of(c, keywords, prons) is None]
    out = {}
    for keyword in keywords:
        scored = sorted((confusion(prons[keyword], prons[c]), c) for c in allowed)
        out[keyword] = tuple(c for score, c in scored if score <= MAX_CONFUSION)[:per_keyword]
    return out
