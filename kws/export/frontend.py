"""The MFCC of kws.features.MFCC as convolutions and matrix products: a front end that exports well.

Exported as it is, the MFCC's `torch.stft` becomes ONNX's STFT operator, which onnxruntime computes slowly
on a CPU: it was 56% of the whole model's batch-1 time, more than all fourteen convolutions. Here the
power spectrum is a two-stage (Cooley-Tukey) DFT built from two grouped `conv1d`s, whose weights hold the
window and the twiddle factors:

    n = n1 + P n2, k = Q k1 + k2 (n_fft = P Q; the hop a multiple of P)
    stage A, per n1: Y[n1, k2] = sum_n2 w[n] x[t hop + n] exp(-2 pi i n2 k2 / Q)    a Q-point real DFT
    stage B, per k2: X[Q k1 + k2] = sum_n1 exp(-2 pi i n1 (k2 / n_fft + k1 / P)) Y[n1, k2]

With the signal viewed as rows of P samples, frame t is Q consecutive rows starting at row t hop / P, so
stage A is one convolution (P groups, kernel Q, stride hop / P) over those rows. Stage B keeps only the k1
that reach the one-sided spectrum's n_fft / 2 + 1 bins, and the mel filterbank's rows are put in the
(k2, k1) order the bins come out in, so nothing is transposed. P is the divisor of gcd(n_fft, hop) with
the fewest multiply-adds (P = 1 is the plain DFT as one convolution); 512/160 gives P = 16, Q = 32, about a
quarter of the direct DFT's work. The result equals `MFCC._mfcc` up to float32 rounding (tests/export).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from kws.features import LOG_OFFSET, MFCC

OUT_OF_BAND_HZ = 1e30  # the frequency given to bins past n_fft / 2: every triangle is zero there


def _mel_points(scale: Any) -> Tensor:
    """The n_mels + 2 corner frequencies (Hz) of torchaudio's filterbank, computed as it computes them."""
    from torchaudio.functional.functional import _hz_to_mel, _mel_to_hz

    f_max = scale.f_max if scale.f_max is not None else float(scale.sample_rate // 2)
    m_min, m_max = _hz_to_mel(scale.f_min, scale.mel_scale), _hz_to_mel(f_max, scale.mel_scale)
    points: Tensor = _mel_to_hz(torch.linspace(m_min, m_max, int(scale.n_mels) + 2), scale.mel_scale)
    return points


def _split(n_fft: int, hop: int) -> int:
    """The P of the two stages: the divisor of gcd(n_fft, hop) with the fewest multiply-adds per frame."""

    def cost(p: int) -> int:
        q = n_fft // p
        return 2 * q * q * p + q * 2 * (n_fft // 2 // q + 1) * 2 * p

    g = math.gcd(n_fft, hop)
    return min((p for p in range(1, g + 1) if g % p == 0), key=cost)


class ConvMFCC(nn.Module):
    """`(batch, samples)` float32 -> `(batch, n_mfcc, frames)`, as `MFCC._mfcc` (centred, reflect-padded
    frames; Hann window; power; mel; log; DCT)."""

    window_rows: Tensor  # (P, 1, 1, Q): window[n1 + P n2]
    dft_q: Tensor  # (1, 2, Q, Q): cos and -sin of 2 pi k2 n2 / Q
    twiddles: Tensor  # (2, Q, 1, P): cos and -sin of 2 pi n1 k2 / n_fft
    dft_p: Tensor  # (2, 1, K1, P): cos and -sin of 2 pi n1 k1 / P
    mel_freqs: Tensor  # (Q * K1,): the frequency of each bin in `power`'s order
    mel_points: Tensor  # (n_mels + 2,): the filters' corner frequencies
    stored_mel: Tensor  # (n_mels, Q * K1): the filterbank, when the formula does not reproduce it
    dct_n: Tensor  # (n_mels,): n + 0.5
    dct_k: Tensor  # (n_mfcc, 1): k
    dct_row_scale: Tensor  # (n_mfcc, 1): 1 / sqrt(2) for k = 0, else 1
    stored_dct: Tensor  # (n_mfcc, n_mels): the DCT, when the formula does not reproduce it

    def __init__(self, mfcc: MFCC) -> None:
        super().__init__()
        spec = mfcc.transform.MelSpectrogram.spectrogram
        n_fft, hop, win_length = int(spec.n_fft), int(spec.hop_length), int(spec.win_length)
        if not spec.center or spec.pad_mode != "reflect" or spec.normalized or spec.power != 2.0:
            raise ValueError("ConvMFCC computes centred, reflect-padded, unnormalised power spectra only")
        p = _split(n_fft, hop)
        q = n_fft // p
        k1_count = n_fft // 2 // q + 1
        self.n_fft, self.hop, self.p, self.q, self.k1_count = n_fft, hop, p, q, k1_count
        window = torch.zeros(n_fft, dtype=torch.float64)  # torch.stft centres a shorter window in n_fft
        left = (n_fft - win_length) // 2
        window[left : left + win_length] = spec.window.double()
        n1, n2 = torch.arange(p, dtype=torch.float64), torch.arange(q, dtype=torch.float64)
        k1, k2 = torch.arange(k1_count, dtype=torch.float64), n2

        # The stages' weights are products of these small tables, formed in `forward`: an exported file
        # stores the tables (14 KiB for 512/160), and its runtime multiplies them out once when it loads.
        def trig(angle: Tensor) -> Tensor:
            return torch.stack([torch.cos(angle), -torch.sin(angle)]).float()

        self.register_buffer(
            "window_rows", window.view(q, p).t().reshape(p, 1, 1, q).float(), persistent=False
        )
        self.register_buffer(
            "dft_q", trig(2 * math.pi * k2[:, None] * n2[None, :] / q)[None], persistent=False
        )
        self.register_buffer("twiddles", trig(2 * math.pi * k2[:, None, None] * n1 / n_fft), persistent=False)
        self.register_buffer("dft_p", trig(2 * math.pi * k1[None, :, None] * n1 / p), persistent=False)

        fb = mfcc.fb  # (n_fft // 2 + 1, n_mels)
        bins = (q * k1[None, :] + k2[:, None]).long().reshape(-1)  # bin of each (k2, k1) output row
        self.bins = bins  # for tests: `power(audio)[:, i]` is bin `bins[i]` of the spectrum
        keep = bins < fb.shape[0]
        # The mel filterbank and the DCT are formed in `forward` too, by torchaudio's own float32 formulas
        # from their frequencies and indices: bit-identical to its matrices (checked here, else they are
        # stored whole), and a few hundred bytes in a file instead of 90 KiB.
        scale = mfcc.transform.MelSpectrogram.mel_scale
        all_freqs = torch.linspace(0, scale.sample_rate // 2, fb.shape[0])
        freqs = torch.full((len(bins),), OUT_OF_BAND_HZ)  # bins past the one-sided spectrum: all-zero rows
        freqs[keep] = all_freqs[bins[keep]]
        self.register_buffer("mel_freqs", freqs, persistent=False)
        self.register_buffer("mel_points", _mel_points(scale), persistent=False)
        stored_mel = torch.zeros(len(bins), fb.shape[1])
        stored_mel[keep] = fb[bins[keep]]
        self.register_buffer("stored_mel", stored_mel.t().contiguous(), persistent=False)
        self.formed_mel = True
        self.formed_mel = scale.norm is None and torch.equal(self.mel_matrix(), self.stored_mel)

        n_mels, n_mfcc = int(scale.n_mels), int(mfcc.transform.n_mfcc)
        self.register_buffer("dct_n", torch.arange(float(n_mels)) + 0.5, persistent=False)
        self.register_buffer("dct_k", torch.arange(float(n_mfcc)).unsqueeze(1), persistent=False)
        row_scale = torch.ones(n_mfcc, 1)
        row_scale[0] = 1.0 / math.sqrt(2.0)
        self.register_buffer("dct_row_scale", row_scale, persistent=False)
        self.register_buffer("stored_dct", mfcc.transform.dct_mat.t().contiguous(), persistent=False)
        self.formed_dct = True
        self.formed_dct = mfcc.transform.norm == "ortho" and torch.equal(self.dct_matrix(), self.stored_dct)

    def mel_matrix(self) -> Tensor:
        """`(n_mels, Q * K1)`: torchaudio's triangular filterbank (melscale_fbanks, norm None) for the bins in
        the (k2, k1) order of `power`."""
        if not self.formed_mel:
            return self.stored_mel
        f_pts = self.mel_points
        f_diff = f_pts[1:] - f_pts[:-1]
        slopes = f_pts.unsqueeze(0) - self.mel_freqs.unsqueeze(1)
        down = (-1.0 * slopes[:, :-2]) / f_diff[:-1]
        up = slopes[:, 2:] / f_diff[1:]
        return torch.max(torch.zeros(1), torch.min(down, up)).t()

    def dct_matrix(self) -> Tensor:
        """`(n_mfcc, n_mels)`: torchaudio's create_dct(norm="ortho"), transposed."""
        if not self.formed_dct:
            return self.stored_dct
        dct = torch.cos(math.pi / float(self.dct_n.shape[0]) * self.dct_n * self.dct_k)
        return dct * self.dct_row_scale * math.sqrt(2.0 / float(self.dct_n.shape[0]))

    def stages(self) -> tuple[Tensor, Tensor]:
        """The two convolutions' weights: `(P * 2 * Q, 1, Q)` (per n1: the windowed Q-point DFT, cosine rows
        then sine rows) and `(Q * 2 * K1, 2 * P, 1)` (per k2: twiddle times P-point DFT, as the real matrix
        [[re, -im], [im, re]] acting on [re; im])."""
        stage_a = (self.window_rows * self.dft_q).reshape(self.p * 2 * self.q, 1, self.q)
        (tr, ti), (dr, di) = self.twiddles, self.dft_p
        re, im = tr * dr - ti * di, tr * di + ti * dr  # (Q, K1, P): exp(-2 pi i n1 (k2 / n_fft + k1 / P))
        stage_b = torch.stack([torch.cat([re, -im], -1), torch.cat([im, re], -1)], 1)  # (Q, 2, K1, 2 P)
        return stage_a, stage_b.reshape(self.q * 2 * self.k1_count, 2 * self.p, 1)

    def forward(self, audio: Tensor) -> Tensor:
        power = self.power(audio)
        log_mel = torch.log(torch.matmul(self.mel_matrix(), power) + LOG_OFFSET)  # (batch, n_mels, frames)
        return torch.matmul(self.dct_matrix(), log_mel)

    def power(self, audio: Tensor) -> Tensor:
        """`(batch, samples)` -> `(batch, Q * K1, frames)` power spectrum, the bins in (k2, k1) order."""
        batch = audio.shape[0]
        half = self.n_fft // 2
        padded = F.pad(audio[:, None], (half, half), mode="reflect")[:, 0]
        n_frames = (padded.shape[1] - self.n_fft) // self.hop + 1
        if padded.shape[1] % self.p:  # whole rows of p samples; the zeros reach no frame
            padded = F.pad(padded, (0, self.p - padded.shape[1] % self.p))
        stage_a, stage_b = self.stages()
        rows = padded.reshape(batch, -1, self.p).transpose(1, 2)  # (batch, p, samples / p)
        # 2-D convolutions on (batch, channels, 1, time): onnxruntime's 2-D kernels beat its 1-D ones
        stride = self.hop // self.p
        y = F.conv2d(rows.unsqueeze(2), stage_a.unsqueeze(2), stride=(1, stride), groups=self.p).squeeze(2)
        y = y[:, :, :n_frames]
        frames = n_frames
        y = y.reshape(batch, self.p, 2, self.q, frames).permute(0, 3, 2, 1, 4)  # (batch, k2, re/im, n1, t)
        y = y.reshape(batch, self.q * 2 * self.p, 1, frames)
        x = F.conv2d(y, stage_b.unsqueeze(2), groups=self.q)  # (batch, q 2 k1, 1, frames)
        x = x.reshape(batch, self.q, 2, self.k1_count, frames)
        return (x[:, :, 0].square() + x[:, :, 1].square()).reshape(batch, self.q * self.k1_count, frames)
