"""Speaking styles of the TTS source (`--style rich`): how one clip of a speaker says its keyword.

A style is drawn per clip from the clip's `Draw` (seed, word, speaker, k), each parameter hashed from its own
name, so adding a style or parameter later leaves the others unchanged. The styles:

- plain: the keyword alone, exactly as `--style plain` says it.
- prosody: SSML <prosody> rate, pitch, range and volume on top of the speaker's voice, sometimes <emphasis>.
- carrier: the keyword inside a short phrase, cut back out. A phrase that follows the keyword ("WORD please")
  makes it non-final: shorter, no final fall, coarticulated into the next word. Its end is found from the
  length of that tail spoken alone, which is clause-final in both syntheses and so has the same duration
  (checked against espeak-ng's own word events: -20..+50 ms, the excess being a silent stop closure), then
  moved to the quietest 5 ms frame nearby. A lead-in ("say ... WORD") is separated by an SSML <break>, so
  the keyword keeps the declining pitch of a phrase's end but starts after an unmistakable silence; a lead-in
  without a pause cannot be cut reliably (espeak-ng re-stresses the word: "say one" shortens "one" by 40%).
- question / exclamation: "WORD?" and "WORD!" intonation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from kws.audio import INT16_SCALE
from kws.prepare.tts.clip import active_frames, fade, frame_levels, trim
from kws.prepare.tts.voices import Draw, Voice, synthesize_ssml

STYLE_STYLE = ("plain", "rich")  # the `--style` choices
STYLE_WEIGHTS = {"plain": 0.2, "prosody": 0.3, "carrier": 0.3, "question": 0.1, "exclamation": 0.1}
EXTRA_PROSODY_CHANCE = 0.3  # carrier, question and exclamation clips that also get <prosody> changes
RATE_PCT = (75, 140)  # SSML <prosody rate>, relative to the speaker's own rate
PITCH_PCT = (-25, 35)  # SSML <prosody pitch>, relative change of the base pitch
RANGE_SCALE = (0.5, 2.0)  # multiplies the speaker's pitch range
VOLUME_DB = (-6, 6)  # SSML <prosody volume>; the clip is re-levelled later, so this only colours the voice
EMPHASIS_CHANCE = 0.35
EMPHASIS_LEVELS = ("reduced", "moderate", "strong")
LEAD_INS = ("say", "okay", "listen", "now say", "the word is", "I said")
# Tails whose duration alone matches their duration after a keyword (checked against espeak-ng's word
# events: the cut lands within -35..+40 ms of the boundary). Not "for me", "thanks", "now", "right away":
# espeak-ng stresses them differently alone, which moves the cut by 60-190 ms.
TAILS = ("please", "again", "today", "okay", "once more")
CARRIER_LAYOUTS = ("tail", "lead-in", "both")  # where the carrier words go around the keyword
BREAK_MS = (220, 320)  # the pause after a lead-in; longer than any stop closure, so it cannot be mistaken
MIN_BREAK_S = 0.12  # a silence at least this long after the lead-in is the break
ONSET_MARGIN_FRAMES = 2  # kept before the keyword's first loud frame: soft onsets (h, f, th) start earlier
FRAME_S = 0.005  # the frames that find the cuts (silence: kws.prepare.tts.clip.SILENCE_DB)
END_SEARCH_S = 0.025  # the tail cut moves to the quietest frame within this distance of its estimate
CUT_FADE_S = 0.003  # never a click at the cut


@dataclass(frozen=True)
class Style:
    """How a clip says its keyword. The defaults are the plain style."""

    name: str = "plain"
    rate_pct: int = 100
    pitch_pct: int = 0
    range_scale: float = 1.0
    volume_db: int = 0
    emphasis: str | None = None
    lead_in: str = ""
    break_ms: int = 0
    tail: str = ""
    mark: str = ""  # "?" or "!"

    @property
    def prosody(self) -> bool:
        return (self.rate_pct, self.pitch_pct, self.range_scale, self.volume_db) != (100, 0, 1.0, 0)


def draw_style(draw: Draw, style: str) -> Style:
    """The clip's style under `--style plain|rich`."""
    if style == "plain":
        return Style()
    if style != "rich":
        raise ValueError(f"unknown style {style!r}; expected one of {STYLE_STYLE}")
    u = draw.uniform("style")
    name = "plain"
    for candidate, weight in STYLE_WEIGHTS.items():
        name = candidate
        u -= weight
        if u < 0:
            break
    if name == "plain":
        return Style()
    fields: dict[str, object] = {"name": name}
    if name == "prosody" or draw.chance("style_extra_prosody", EXTRA_PROSODY_CHANCE):
        fields.update(
            rate_pct=draw.integer("style_rate", *RATE_PCT),
            pitch_pct=draw.integer("style_pitch", *PITCH_PCT),
            range_scale=round(draw.uniform("style_range", *RANGE_SCALE), 2),
            volume_db=draw.integer("style_volume", *VOLUME_DB),
        )
    if name in ("prosody", "carrier") and draw.chance("style_emphasis", EMPHASIS_CHANCE):
        fields["emphasis"] = draw.choice("style_emphasis_level", EMPHASIS_LEVELS)
    if name == "carrier":
        layout = draw.choice("carrier_layout", CARRIER_LAYOUTS)
        if layout in ("lead-in", "both"):
            fields.update(
                lead_in=draw.choice("carrier_lead_in", LEAD_INS),
                break_ms=draw.integer("carrier_break", *BREAK_MS),
            )
        if layout in ("tail", "both"):
            fields["tail"] = draw.choice("carrier_tail", TAILS)
    if name in ("question", "exclamation"):
        fields["mark"] = "?" if name == "question" else "!"
    return Style(**fields)  # type: ignore[arg-type]


def style_ssml(
    voice: Voice, style: Style, word: str, *, with_word: bool = True, with_lead: bool = True
) -> str:
    """The SSML document for `word` in `style` (words and carriers need no XML escaping: a-z, 0-9, ' -)."""
    core = word
    if style.emphasis is not None:
        core = f'<emphasis level="{style.emphasis}">{core}</emphasis>'
    parts = []
    if style.lead_in and with_lead:
        parts.append(f'{style.lead_in} <break time="{style.break_ms}ms"/>')
    if with_word:
        parts.append(core + style.mark)
    if style.tail:
        parts.append(style.tail)
    attrs = f'range="{round(voice.pitch_range_pct * style.range_scale)}%"'
    if style.prosody:
        attrs += f' rate="{style.rate_pct}%" pitch="{style.pitch_pct:+d}%" volume="{style.volume_db:+d}dB"'
    return f"<speak><prosody {attrs}>{' '.join(parts)}</prosody></speak>"


def speak(voice: Voice, word: str, style: Style) -> tuple[np.ndarray, int]:
    """The keyword in `style` as float audio `(samples,)` (silence at the edges left for the caller to trim)
    and its sample rate. The plain style's SSML is `Voice.ssml`'s, so plain clips keep their bytes."""
    samples, rate = synthesize_ssml(voice, style_ssml(voice, style, word))
    audio = _float(samples)
    if style.lead_in:
        audio = audio[after_break(audio, rate) :]
    if style.tail:
        tail, _ = synthesize_ssml(voice, style_ssml(voice, style, word, with_word=False, with_lead=False))
        # No margin: the cut needs the exact lengths of both utterances.
        spoken = trim(audio, rate, frame_s=FRAME_S, margin_s=0.0)
        tail_alone = trim(_float(tail), rate, frame_s=FRAME_S, margin_s=0.0)
        audio = audio[: tail_cut(spoken, tail_alone, rate, offset=_start(audio, rate))]
        audio = fade(audio, rate, CUT_FADE_S, "linear")
    return audio, rate


def spoken(voice: Voice, word: str, style: Style) -> tuple[np.ndarray, int]:
    """`speak`, trimmed of the silence around the speech (kws.prepare.tts.clip.trim keeps a margin): the
    speech of a clip, and of a keyword placed in a stream."""
    audio, rate = speak(voice, word, style)
    return trim(audio, rate), rate


def _float(samples: np.ndarray) -> np.ndarray:
    return samples.astype(np.float64) / INT16_SCALE


def _start(audio: np.ndarray, rate: int) -> int:
    on, frame = active_frames(audio, rate, FRAME_S)
    idx = np.flatnonzero(on)
    return int(idx[0]) * frame if len(idx) else 0


def after_break(audio: np.ndarray, rate: int) -> int:
    """Sample where speech resumes after the first silence of MIN_BREAK_S or more (the lead-in's <break>);
    0 when there is none: the whole utterance stays (a clip too long, never one cut short)."""
    on, frame = active_frames(audio, rate, FRAME_S)
    idx = np.flatnonzero(on)
    if len(idx) < 2:
        return 0
    gaps = np.flatnonzero(np.diff(idx) * frame >= MIN_BREAK_S * rate)
    return max(0, int(idx[gaps[0] + 1] - ONSET_MARGIN_FRAMES) * frame) if len(gaps) else 0


def tail_cut(speech: np.ndarray, tail: np.ndarray, rate: int, offset: int = 0) -> int:
    """Where the keyword ends in `speech` (trimmed "WORD tail"), given the tail spoken alone (trimmed): the
    tail's length before the end, moved to the quietest frame within END_SEARCH_S; plus `offset`."""
    estimate = len(speech) - len(tail)
    rms, frame = frame_levels(speech, rate, FRAME_S)
    reach = round(END_SEARCH_S * rate / frame)
    centre = estimate // frame
    lo, hi = max(1, centre - reach), min(len(rms) - 1, centre + reach)
    if hi <= lo:
        return offset + max(0, estimate)
    quietest = lo + int(np.argmin(rms[lo : hi + 1]))
    return offset + quietest * frame + frame // 2
