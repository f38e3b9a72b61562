"""The word lists a user gives the TTS source (`--words`, `--unknown-words`): parsing, validation, folders.

A word's folder (and class label) is the word with spaces turned into `_` and apostrophes dropped:
`hey kws` -> `hey_kws`, `don't` -> `dont`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from kws.errors import KWSError
from kws.prepare.splits import SUB_WORDS

V1_WORDS = (
    "bed bird cat dog down eight five four go happy house left marvin nine no off on one right seven sheila "
    "six stop three tree two up wow yes zero"
).split()
WORD_RE = re.compile(r"[a-z0-9]+(?:['\- ][a-z0-9]+)*")  # letters/digits, single inner space, ' or -
MAX_WORD_CHARS = 40
RESERVED_LABELS = ("unknown", "silence")  # classes that `--classes sub` adds itself


def word_folder(word: str) -> str:
    return word.replace(" ", "_").replace("'", "")


def parse_words(text: str | None, classes: str = "all") -> list[str]:
    """`--words`: comma-separated keywords, lower-cased, inner spaces collapsed; None -> the 30 v1 words
    (the ten Speech Commands command words with `--classes sub`)."""
    if text is None:
        return list(SUB_WORDS if classes == "sub" else V1_WORDS)
    return _parse(text, "--words", "keywords, e.g. --words yes,no,'hey kws'")


def parse_unknown_words(text: str | None) -> list[str]:
    """`--unknown-words`: comma-separated non-keywords for the `unknown` class, checked like `--words`
    (kws.prepare.tts.unknown_words refuses the keywords and their homophones); None -> none."""
    if text is None:
        return []
    return _parse(text, "--unknown-words", "words, e.g. --unknown-words apple,window")


def _parse(text: str, option: str, example: str) -> list[str]:
    if not text.strip():
        raise KWSError(f"{option} is empty; pass comma-separated {example}")
    return check_words([" ".join(item.lower().split()) for item in text.split(",")], option)


def check_words(words: Sequence[str], option: str = "--words") -> list[str]:
    """Refuse empty, unspeakable, reserved or duplicate words with a message naming them and `option`."""
    if not words:
        raise KWSError(f"no words given to {option}; pass comma-separated words, e.g. {option} yes,no,up")
    seen: dict[str, str] = {}
    for i, word in enumerate(words, 1):
        if not word:
            raise KWSError(f"{option} item {i} is empty (two commas in a row, or a trailing comma?)")
        if len(word) > MAX_WORD_CHARS or not WORD_RE.fullmatch(word):
            raise KWSError(
                f"{option} item {i} {word!r} is not a word kws can synthesize: use at most "
                f"{MAX_WORD_CHARS} characters of a-z, 0-9, single spaces, ' and - (no other punctuation)"
            )
        folder = word_folder(word)
        if folder in RESERVED_LABELS:
            raise KWSError(f"{option} item {i} {word!r} is reserved: `--classes sub` adds that class itself")
        if folder in seen and seen[folder] == word:
            raise KWSError(f"{option} lists {word!r} twice (words are compared in lower case)")
        if folder in seen:
            raise KWSError(
                f"{option} {seen[folder]!r} and {word!r} would share the folder {folder!r}; keep one"
            )
        seen[folder] = word
    return list(words)
