"""One chunk of a long recording (kws.prepare.tts.streams): sentences, keywords, pauses and noise.

A recording is cut into chunks of CHUNK_S seconds (the last one shorter), each rendered by one worker task
from its own Draw, keyed on (seed, recording, chunk): the audio depends on neither the worker count nor the
other chunks, and a longer recording only adds chunks. In a chunk, utterances follow each other with a
pause of PAUSE_S between them (and before the first): sentences said by any of the dataset's speakers (any
engine's; espeak-ng's through SSML), with the usual per-utterance jitter, and, in a keyword stream, a test
speaker's keyword before the sentence that would end past the time the keyword is due (KEYWORD_GAP_S after
the previous keyword's onset), so about one keyword every 5-15 s, none in the first or last KEYWORD_EDGE_S
of a chunk (keywords of neighbouring chunks stay at least twice that apart). An utterance that would end
past the chunk's end ends the chunk: its last seconds are a pause. Every utterance is levelled to an RMS
drawn from SPEECH_DBFS.

A keyword is spoken as a clip would say it (the clip's voice jitter and `--style`, kws.prepare.tts.styles)
but placed as it is, not fitted into a second. Its event spans the trimmed speech, including the trim's
20 ms margin on each side (kws.prepare.tts.clip.TRIM_MARGIN_S). Keywords never overlap each other or a
sentence: at least PAUSE_S[0] of pause lies between any two utterances.

Noise: with CLEAN_CHANCE a chunk is clean; otherwise one of the noise kinds lies under the whole chunk at an
SNR drawn from SNR_DB against the nominal speech level, fading into the next chunk's over OVERLAP_S.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from xml.sax.saxutils import escape

import numpy as np

from kws.audio import INT16_SCALE, SAMPLE_RATE
from kws.prepare.tts.clip import fade, resample, trim
from kws.prepare.tts.engines import say, vary
from kws.prepare.tts.noise import NOISE_KINDS, make_noise
from kws.prepare.tts.styles import Style, draw_style
from kws.prepare.tts.voices import Draw, Speaker, Voice, synthesize_ssml

CHUNK_S = 30.0  # seconds of a recording per worker task
PAUSE_S = (0.3, 3.0)  # between utterances, and before a chunk's first
KEYWORD_GAP_S = (5.0, 15.0)  # from a keyword's onset until the next is due
# No keyword in a chunk's first or last seconds: keywords of neighbouring chunks stay 3 s apart or more,
# beyond one refractory period plus the matching tolerance of stream evaluation
KEYWORD_EDGE_S = 1.5
SPEECH_DBFS = (-32.0, -20.0)  # RMS of an utterance
NOMINAL_SPEECH_DBFS = sum(SPEECH_DBFS) / 2  # the speech level the SNR refers to
SNR_DB = (0.0, 30.0)
CLEAN_CHANCE = 0.2
OVERLAP_S = 0.1  # a chunk's noise runs this far into the next chunk, fading out as the next fades in
OVERLAP_SAMPLES = round(OVERLAP_S * SAMPLE_RATE)


@dataclass(frozen=True)
class Voices:
    """Who says what in a set of recordings, and in which style."""

    seed: int
    style: str  # --style, for the keywords
    sentences: tuple[str, ...]  # keyword-free (kws.prepare.tts.sentences.keyword_free)
    speakers: tuple[Speaker, ...]  # say the sentences
    keywords: tuple[str, ...] = ()
    labels: tuple[str, ...] = ()  # the keywords' folders: the events' labels
    test_speakers: tuple[Speaker, ...] = ()  # say the keywords
    # When given, these say the keywords instead, e.g. another engine's speakers (bench/detection.py)
    keyword_speakers: tuple[Speaker, ...] = ()


@dataclass(frozen=True)
class ChunkTask:
    voices: Voices
    recording: str  # "stream_000"
    index: int
    n_samples: int
    with_keywords: bool

    def draw(self, *parts: object) -> Draw:
        tail = "".join(f"/{p}" for p in parts)
        return Draw(f"kws-tts/{self.voices.seed}/stream/{self.recording}/{self.index}{tail}")


@dataclass(frozen=True)
class ChunkEvent:
    label: str
    start: int  # samples from the chunk's start
    end: int


def render_chunk(task: ChunkTask) -> tuple[np.ndarray, list[ChunkEvent]]:
    """The chunk's float32 audio `(n_samples + OVERLAP_SAMPLES,)` (the tail holds only fading noise) and its
    keyword events."""
    draw = task.draw()
    audio = np.zeros(task.n_samples + OVERLAP_SAMPLES)
    events: list[ChunkEvent] = []
    t = _samples(draw.uniform("lead_pause", *PAUSE_S))
    edge = _samples(KEYWORD_EDGE_S)
    due = t + _samples(draw.uniform("first_keyword", 0.0, KEYWORD_GAP_S[1]))
    for i in itertools.count():  # until an utterance does not fit
        u = task.draw(i)
        sentence = _sentence(task.voices, u)
        # due before the sentence would end: say the keyword first, unless too near the chunk's edges
        if task.with_keywords and t + len(sentence) > due and t >= edge:
            k = task.draw(i, "keyword")
            speech, label = _keyword(task.voices, k)
            if t + len(speech) <= task.n_samples - edge:
                audio[t : t + len(speech)] = speech
                if len(speech):
                    events.append(ChunkEvent(label, t, t + len(speech)))
                due = t + _samples(k.uniform("keyword_gap", *KEYWORD_GAP_S))
                t += len(speech) + _samples(k.uniform("pause", *PAUSE_S))
        if t + len(sentence) > task.n_samples:
            break
        audio[t : t + len(sentence)] = sentence
        t += len(sentence) + _samples(u.uniform("pause", *PAUSE_S))
    if not draw.chance("clean", CLEAN_CHANCE):
        kind = draw.choice("noise_kind", sorted(NOISE_KINDS))
        level = 10 ** ((NOMINAL_SPEECH_DBFS - draw.uniform("snr_db", *SNR_DB)) / 20)
        noise = make_noise(kind, len(audio), draw.rng("noise")) * level
        ramp = np.sin(np.linspace(0.0, np.pi / 2, OVERLAP_SAMPLES + 2)[1:-1])  # equal power: sin^2 + cos^2
        noise[:OVERLAP_SAMPLES] *= ramp
        noise[-OVERLAP_SAMPLES:] *= ramp[::-1]
        audio += noise
    return audio.astype(np.float32), events


def _samples(seconds: float) -> int:
    return round(seconds * SAMPLE_RATE)


def _sentence(voices: Voices, draw: Draw) -> np.ndarray:
    speaker = draw.choice("speaker", voices.speakers)
    text = draw.choice("sentence", voices.sentences)
    voice = vary(speaker.voice, draw)
    if not isinstance(voice, Voice):
        return _levelled(*say(voice, text, Style()), draw)
    samples, rate = synthesize_ssml(voice, voice.ssml(escape(text)))
    return _levelled(trim(samples.astype(np.float64) / INT16_SCALE, rate), rate, draw)


def _keyword(voices: Voices, draw: Draw) -> tuple[np.ndarray, str]:
    k = draw.integer("keyword", 0, len(voices.keywords) - 1)
    speaker = draw.choice("speaker", voices.keyword_speakers or voices.test_speakers)
    speech, rate = say(vary(speaker.voice, draw), voices.keywords[k], draw_style(draw, voices.style))
    return _levelled(speech, rate, draw), voices.labels[k]


def _levelled(speech: np.ndarray, rate: int, draw: Draw) -> np.ndarray:
    """Trimmed speech at `rate` -> 16 kHz, faded at its edges, at an RMS drawn from SPEECH_DBFS."""
    if len(speech) == 0:  # espeak-ng said nothing: an empty utterance, just a pause
        return speech
    speech = fade(resample(speech, rate, SAMPLE_RATE), SAMPLE_RATE)
    rms = max(float(np.sqrt(np.mean(speech**2))), 1e-9)
    return speech * (10 ** (draw.uniform("level_dbfs", *SPEECH_DBFS) / 20) / rms)


def chunk_lengths(n_samples: int) -> list[int]:
    """The lengths of a recording's chunks: CHUNK_S each, the last one what is left."""
    size = _samples(CHUNK_S)
    return [min(size, n_samples - start) for start in range(0, n_samples, size)] if n_samples else []
