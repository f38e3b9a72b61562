"""The `unknown` words of the TTS source under `--classes sub`: which non-keyword words it speaks, and which
one each unknown clip of a speaker says.

The words are the built-in GENERAL_WORDS, `--unknown-words`, and the confusables of each keyword, chosen by
sound from CANDIDATE_WORDS (kws.prepare.tts.phonemes); never a keyword or a homophone of one. Every speaker
says ceil(EXTRA_FRACTION * n_keywords * clips_per_speaker) unknown clips, in its own split: at least the
ceil(EXTRA_FRACTION * n) unknown clips that kws.prepare.splits draws for a split of n keyword clips. Unknown
clip m of speaker s is drawn from a Draw keyed on (seed, "unknown", s, m):
- with probability PHRASE_SHARE, a phrase: PHRASE_WORDS of these words spoken as one utterance, of which the
  clip is a random one-second cut (kws.prepare.tts.clip.cut_clip). A detector slides its window over running
  speech: word boundaries, halves of words and a confusable inside a longer word ("bright" holds "right")
  are what it must learn to call `unknown`, and lone words do not show them. The phrases are word strings, not
  the sentences of the long recordings (kws.prepare.tts.sentences), so stream evaluation hears text that
  training never did;
- otherwise one word: a confusable with probability CONFUSABLE_SHARE when the keywords have any, else one of
  the general and `--unknown-words` words.
The clips are ordinary label folders, `<word>/<speakerid>_nohash_<m>.wav` and `phrases/<speakerid>_nohash_<m>
.wav`, from which kws.prepare.splits draws `unknown` as "the split's other words".

`unknown_words.json` beside speakers.json says which words there are and why:

    {"format": 1, "seed": 0, "keywords": ["go", "off"], "confusables": {"go": ["goal", "goat", ...], ...},
     "general": ["able", ...], "extra": ["window"], "n_clips": {"goal": 3, "able": 1, "phrases": 40, ...}}
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kws.errors import KWSError
from kws.files import write_json_if_changed
from kws.prepare.splits import EXTRA_FRACTION
from kws.prepare.tts.keywords import word_folder
from kws.prepare.tts.phonemes import confusables, homophone_of, pronunciations
from kws.prepare.tts.vocabulary import CANDIDATE_WORDS, GENERAL_WORDS
from kws.prepare.tts.voices import Draw

UNKNOWN_FILE = "unknown_words.json"
UNKNOWN_FORMAT = 1
CONFUSABLE_SHARE = 0.5  # of the single-word unknown clips, when the keywords have confusables
PHRASE_SHARE = 0.5  # of the unknown clips: a one-second cut of a phrase
PHRASE_WORDS = (4, 8)  # words per phrase, both included: 1.5-3 s of speech, so that a cut is all speech
PHRASE_FOLDER = "phrases"


@dataclass(frozen=True)
class UnknownClip:
    """What one unknown clip says: a word, or a phrase to cut a second from."""

    text: str
    phrase: bool = False

    @property
    def folder(self) -> str:
        return PHRASE_FOLDER if self.phrase else word_folder(self.text)


@dataclass(frozen=True)
class UnknownWords:
    """The words the unknown clips say (none of them a keyword or sounds like one)."""

    general: tuple[str, ...]  # GENERAL_WORDS that are not keywords or homophones of one
    extra: tuple[str, ...]  # --unknown-words
    confusables: dict[str, tuple[str, ...]] = field(default_factory=dict)  # keyword -> its confusables

    @property
    def confusable_pool(self) -> list[str]:
        return sorted({w for words in self.confusables.values() for w in words})

    @property
    def plain_pool(self) -> list[str]:
        return sorted({*self.general, *self.extra})

    @property
    def words(self) -> list[str]:
        return sorted({*self.plain_pool, *self.confusable_pool})

    def pick(self, seed: int, speaker_id: str, m: int) -> UnknownClip:
        """What unknown clip m of a speaker says."""
        draw = Draw(f"kws-tts/{seed}/unknown/{speaker_id}/{m}")
        if draw.chance("phrase", PHRASE_SHARE):
            words = self.words
            n = draw.integer("phrase_words", *PHRASE_WORDS)
            text = " ".join(draw.choice(f"phrase_word/{i}", words) for i in range(n))
            return UnknownClip(text, phrase=True)
        pool = self.confusable_pool
        if pool and draw.chance("confusable", CONFUSABLE_SHARE):
            return UnknownClip(draw.choice("confusable_word", pool))
        return UnknownClip(draw.choice("word", self.plain_pool))


def choose_unknown_words(keywords: Sequence[str], extra: Sequence[str] = ()) -> UnknownWords:
    """The unknown words for `keywords`; KWSError when an `--unknown-words` item is a keyword or sounds like
    one (`extra` is already checked by kws.prepare.tts.keywords.parse_unknown_words)."""
    prons = pronunciations([*keywords, *extra, *GENERAL_WORDS, *CANDIDATE_WORDS])
    folders = {word_folder(k): k for k in keywords}
    for option, word in [*(("--words", k) for k in keywords), *(("--unknown-words", w) for w in extra)]:
        if word_folder(word) == PHRASE_FOLDER:
            raise KWSError(
                f"{option} {word!r} would share the folder {PHRASE_FOLDER!r} of the unknown class's phrase "
                "clips under --classes sub; choose another word"
            )
    for word in extra:
        if word_folder(word) in folders:
            raise KWSError(f"--unknown-words {word!r} is also a keyword (--words); drop it from one of them")
        keyword = homophone_of(word, keywords, prons)
        if keyword is not None:
            raise KWSError(
                f"--unknown-words {word!r} sounds the same as the keyword {keyword!r} to espeak-ng; drop it: "
                "it would teach the model that the keyword is unknown"
            )

    def allowed(word: str) -> bool:
        return word_folder(word) not in folders and homophone_of(word, keywords, prons) is None

    general = tuple(w for w in GENERAL_WORDS if allowed(w))
    return UnknownWords(general, tuple(extra), confusables(keywords, CANDIDATE_WORDS, prons))


def n_unknown_clips(n_keywords: int, clips_per_speaker: int) -> int:
    """How many unknown clips each speaker says: with its keyword clips, enough for its split's `unknown`."""
    return math.ceil(EXTRA_FRACTION * n_keywords * clips_per_speaker)


def write_unknown_json(
    dataset_dir: Path, keywords: Sequence[str], unknown: UnknownWords, clip_words: Sequence[str], seed: int
) -> Path:
    """Write `unknown_words.json` (see the module docstring), unless it already holds the same content."""
    path = dataset_dir / UNKNOWN_FILE
    doc: dict[str, Any] = {
        "format": UNKNOWN_FORMAT,
        "seed": seed,
        "keywords": list(keywords),
        "confusables": {k: list(v) for k, v in unknown.confusables.items()},
        "general": list(unknown.general),
        "extra": list(unknown.extra),
        "n_clips": dict(sorted(Counter(clip_words).items())),
    }
    write_json_if_changed(path, doc)
    return path
