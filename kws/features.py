"""Features: MFCC through torchaudio with the recipe's parameters, then crop/pad to a fixed number of frames.

`(batch, samples)` float audio in [-1, 1] -> `(batch, n_mfcc, n_frames)`. Lengths travel alongside:
samples in, frames out. Everything is batched and runs on the input's device.

Short clips are padded one of two ways (`features.pad`):
- "batch", as NeMo 1.x: its collate function pads every waveform with zeros to the batch's widest clip, the
  MFCC runs over that (a short clip's tail frames are the MFCC of digital silence, not zeros), and
  CropOrPadSpectrogramAugmentation crops or pads the batch as a whole to `n_frames`;
- "clip": each clip is cropped or padded by its own length, its frames past the clip are zeros, so a clip's
  features do not depend on the other clips of its batch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import torchaudio
from torch import Tensor, nn

from kws.augment.vtlp import draw_warp_index, warp_factors, warped_filterbanks
from kws.config import FeaturesConfig
from kws.masks import valid_mask

LOG_OFFSET = 1e-6  # torchaudio's MFCC(log_mels=True) adds this before the log
NORM_EPS = 1e-5  # added to the standard deviation in per-utterance normalisation
VTLP_STEPS = 31  # distinct warp factors over features.vtlp_range (kws/augment/vtlp.py)
PAD_MODES = ("clip", "batch")  # features.pad


def frame_lengths(lengths: Tensor, hop_length: int) -> Tensor:
    """Frames of a centred STFT (`center=True`) for clips of `lengths` samples: 16000 -> 101 at hop 160."""
    return torch.div(lengths, hop_length, rounding_mode="floor") + 1


def pad_to_widest(audio: Tensor, lengths: Tensor, n_fft: int) -> tuple[Tensor, Tensor]:
    """NeMo's batch: every clip zero-padded to the batch's widest clip, which becomes everyone's length.

    `(batch, width)`, lengths `(batch,)` -> `(batch, width + n_fft // 2)`, lengths all `lengths.max()`.
    A centred STFT of the result gives, in its first `frame_lengths(lengths.max())` frames, exactly the
    frames of a centred STFT of the batch cut to its widest clip (`audio[:, :lengths.max()]`, what NeMo's
    collate function builds), whatever width the data layer padded to. Cutting would need `lengths.max()` as
    a Python int, a device sync every step on a GPU; instead the samples just past the widest clip are
    overwritten with the reflection `torch.stft(center=True)` would have added there, and the frames past
    it are left for crop/pad to drop as padding.
    """
    batch, width = audio.shape
    lengths = lengths.to(audio.device)
    end = lengths.max().clamp(max=width)  # 0-dim tensor: stays on the device
    reach = n_fft // 2  # the centred STFT's last frame reads this far past the end
    out = F.pad(audio * valid_mask(lengths, width, audio.dtype), (0, reach))  # NeMo pads with zeros
    j = torch.arange(reach, device=audio.device)
    mirrored = torch.gather(out, 1, (end - 2 - j).clamp(min=0).expand(batch, -1))  # "reflect": x[end-2-j]
    out.scatter_(1, (end + j).expand(batch, -1), mirrored)
    return out, end.expand(batch).clone()


class MFCC(nn.Module):
    """`(batch, samples)` float32 -> `(batch, n_mfcc, frames)`, lengths in samples -> lengths in frames.

    Exactly the recipe's transform: DCT-II (ortho) of log mel power, Hann window, no dither, no
    pre-emphasis, no normalisation. Always computed in float32, also inside an autocast region: the log of
    small mel energies loses too much in bf16/fp16.
    """

    def __init__(self, cfg: FeaturesConfig) -> None:
        super().__init__()
        self.hop_length = cfg.hop_length
        self.transform = torchaudio.transforms.MFCC(
            sample_rate=cfg.sample_rate,
            n_mfcc=cfg.n_mfcc,
            dct_type=2,
            norm="ortho",
            log_mels=True,
            melkwargs=dict(
                n_fft=cfg.n_fft,
                win_length=cfg.win_length,
                hop_length=cfg.hop_length,
                n_mels=cfg.n_mels,
                f_min=cfg.f_min,
                f_max=cfg.f_max,
                window_fn=torch.hann_window,
            ),
        )

    def forward(
        self, audio: Tensor, lengths: Tensor, filterbanks: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """`filterbanks` `(batch, n_freqs, n_mels)`: a mel filterbank per clip (VTLP, kws/augment/vtlp.py);
        None uses the recipe's filterbank `fb` for every clip."""
        with torch.autocast(device_type=audio.device.type, enabled=False):
            feats = self._mfcc(audio.float(), filterbanks)
        return feats, frame_lengths(lengths, self.hop_length)

    @property
    def fb(self) -> Tensor:
        """The recipe's mel filterbank, `(n_freqs, n_mels)`."""
        fb: Tensor = self.transform.MelSpectrogram.mel_scale.fb
        return fb

    def _mfcc(self, audio: Tensor, filterbanks: Tensor | None = None) -> Tensor:
        """`torchaudio.transforms.MFCC.forward` with its own window, filterbank and DCT, except that the power
        spectrum is re^2 + im^2: the complex `abs().pow(2)` (a square root, then a square) took 40% of the
        transform's time on CPU. Equal to torchaudio's output up to float32 rounding (tested)."""
        spec = self.transform.MelSpectrogram.spectrogram
        stft = torch.stft(
            audio,
            n_fft=spec.n_fft,
            hop_length=spec.hop_length,
            win_length=spec.win_length,
            window=spec.window,
            center=spec.center,
            pad_mode=spec.pad_mode,
            normalized=False,
            onesided=True,
            return_complex=True,
        )
        parts = torch.view_as_real(stft)
        power = parts[..., 0].square().addcmul_(parts[..., 1], parts[..., 1])
        if filterbanks is None:
            mel = self.transform.MelSpectrogram.mel_scale(power)  # (batch, n_mels, frames)
        else:
            mel = torch.bmm(power.transpose(-1, -2), filterbanks).transpose(-1, -2)
        log_mel = torch.log(mel + LOG_OFFSET)
        return torch.matmul(log_mel.transpose(-1, -2), self.transform.dct_mat).transpose(-1, -2)


def crop_or_pad(
    feats: Tensor, lengths: Tensor, n_frames: int, *, train: bool, generator: torch.Generator | None = None
) -> tuple[Tensor, Tensor]:
    """Bring every clip to `n_frames`: `(batch, n_features, frames)` -> `(batch, n_features, n_frames)`.

    Each clip is treated by its own length (frames at or beyond `lengths[i]` are padding and are dropped):
    - longer than `n_frames`: cropped at a random offset in training (drawn with `generator`, which must
      live on `feats.device`), at the centre otherwise;
    - shorter: zero-padded symmetrically, the odd frame on the right (101 -> 13 left, 14 right).
    Returns the new features and lengths, which are all `n_frames`: as in the recipe (NeMo's
    CropOrPadSpectrogramAugmentation), the zero frames are part of the input, so the encoder's masks see the
    whole clip as valid and the head averages over all `n_frames` frames.
    With every length equal to the batch's width (`features.pad: batch`, after `pad_to_widest`) this is
    NeMo's batch-wide crop/pad; with each clip's own length (`pad: clip`), a short clip's tail frames are
    zeros instead of the MFCC of silence.
    """
    batch, _, width = feats.shape
    lengths = lengths.to(feats.device).clamp(max=width)
    excess = lengths - n_frames
    if train:
        u = torch.rand(batch, generator=generator, device=feats.device)
        crop = (u * (excess.clamp(min=0) + 1).to(u.dtype)).floor().long()
    else:
        crop = torch.div(excess.clamp(min=0), 2, rounding_mode="floor")
    pad_left = torch.div((-excess).clamp(min=0), 2, rounding_mode="floor")
    # Output frame t shows input frame start + t; positions outside [0, length) are zeros.
    start = crop - pad_left
    src = start[:, None] + torch.arange(n_frames, device=feats.device)
    valid = (src >= 0) & (src < lengths[:, None])
    index = src.clamp(0, max(width - 1, 0))[:, None, :].expand(-1, feats.shape[1], -1)
    out = torch.gather(feats, 2, index) * valid[:, None, :].to(feats.dtype)
    return out, torch.full_like(lengths, n_frames)


def normalize_per_utterance(feats: Tensor, lengths: Tensor) -> Tensor:
    """Zero mean, unit variance per feature over each clip's valid frames; padding frames become 0."""
    # Masked sums over time as batched matrix-vector products, and in-place arithmetic: a third of the
    # elementwise passes of the plain formula, which took as long as the MFCC itself on a busy CPU.
    mask = valid_mask(lengths, feats.shape[-1], feats.dtype)[:, :, None]
    n = mask.sum(1, keepdim=True).clamp(min=1)  # (batch, 1, 1)
    mean = torch.bmm(feats, mask) / n  # (batch, n_features, 1)
    centred = feats - mean
    var = torch.bmm(centred.square(), mask) / (n - 1).clamp(min=1)
    return centred.mul_(var.sqrt_().add_(NORM_EPS).reciprocal_()).mul_(mask.transpose(1, 2))


class FeatureExtractor(nn.Module):
    """(`pad: batch`: pad to the widest clip) -> MFCC -> (optional per-utterance normalisation) -> crop/pad to
    `cfg.n_frames`.

    `(batch, samples)`, lengths in samples -> `(batch, n_mfcc, n_frames)`, lengths in frames (all
    `n_frames`, as NeMo passes on: the encoder sees every frame as valid). Training mode crops long inputs at
    a random offset (from `generator`, on the audio's device); eval mode at the centre (NeMo crops at random
    in evaluation too; a centre crop makes evaluation deterministic). With `pad: batch` "long" means the
    batch's widest clip, and every clip is cropped or padded as that clip would be.
    """

    vtlp_banks: Tensor  # (VTLP_STEPS + 1, n_freqs, n_mels) warped filterbanks, the last unwarped

    def __init__(self, cfg: FeaturesConfig) -> None:
        super().__init__()
        if cfg.normalize not in (None, "per_utterance"):
            raise ValueError(f"normalize must be None or 'per_utterance', got {cfg.normalize!r}")
        # `features.pad`: configs and checkpoints without the key get "clip" (FeaturesConfig's default), the
        # behaviour they were written with; the shipped recipe configs set "batch".
        self.pad = cfg.pad
        if self.pad not in PAD_MODES:
            raise ValueError(f"pad must be one of {list(PAD_MODES)}, got {self.pad!r}")
        self.mfcc = MFCC(cfg)
        self.n_fft = cfg.n_fft
        self.n_frames = cfg.n_frames
        self.normalize = cfg.normalize
        # VTLP, training only: evaluation always sees the recipe's filterbank. The warped filterbanks are
        # built once (a non-persistent buffer: it follows .to(device), stays out of state dicts).
        self.vtlp_prob = cfg.vtlp_prob if cfg.vtlp_range is not None else 0.0
        banks = torch.zeros(0)
        if cfg.vtlp_range is not None:
            banks = warped_filterbanks(self.mfcc.fb, warp_factors(cfg.vtlp_range, VTLP_STEPS))
        self.register_buffer("vtlp_banks", banks, persistent=False)

    def forward(
        self, audio: Tensor, lengths: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        if self.pad == "batch":
            audio, lengths = pad_to_widest(audio, lengths, self.n_fft)
        filterbanks = None
        if self.training and self.vtlp_prob > 0:
            index = draw_warp_index(audio.shape[0], VTLP_STEPS, self.vtlp_prob, audio.device, generator)
            filterbanks = self.vtlp_banks[index]
        feats, feat_lengths = self.mfcc(audio, lengths, filterbanks)
        if self.normalize == "per_utterance":
            feats = normalize_per_utterance(feats, feat_lengths)
        return crop_or_pad(feats, feat_lengths, self.n_frames, train=self.training, generator=generator)
