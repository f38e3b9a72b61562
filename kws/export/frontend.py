"""The MFCC of kws.features.MFCC as convolutions and matrix products: a front end that exports well.

Exported as it is, the MFCC's `torch.stft` becomes ONNX's STFT operator, which onnxruntime computes slowly
on a CPU: it was 56% of the whole model's batch-1 time, more than all fourteen convolutions. Here the
power spectrum is a two-stage (Cooley-Tukey) DFT built from two grouped `conv1d`s, whose weights hold the
window and the twiddle factors:

    n = n1 + P n2, k = Q k1 + k2 (n_fft = P Q; the hop a multiple of P)
    stage A, per n1: Y[n1, k2] = sum_n2 w[n] x[t hop + n] exp(-2 pi i n2 k2 / Q)    a Q-point real DFT
    stage B, per k2: X[Q k1 + k2] = sum_n1 exp(-2 pi i n1 (Q k1 + k2) / n_fft) Y[n1, k2]

With the signal viewed as rows of P samples, frame t is Q consecutive rows starting at row t hop / P, so
stage A is one convolution (P groups, kernel Q, stride hop / P) over those rows. The input is real, so
Y[n1, Q - k2] is the conjugate of Y[n1, k2]: stage A computes only k2 = 0 .. Q / 2 (Q outputs per n1,
Q + 1 for an odd Q, instead of 2 Q: half the multiply-adds), and stage B's group g reads Y[., g] once for
the bins of both k2 = g and k2 = Q - g (group 0: k2 = 0 and Q / 2, both real). Stage B keeps only the bins
of the one-sided spectrum, its outputs are a group's real parts then its imaginary parts, so the power is
one square and one sum, and the mel filterbank's rows are put in the order the bins come out in, so nothing
is transposed after stage B. P is the divisor of gcd(n_fft, hop) with the fewest multiply-adds (P = 1 is
the plain DFT as one convolution); 512/160 gives P = 16, Q = 32, an eighth of the plain DFT's work. The
result equals `MFCC._mfcc` up to float32 rounding (tests/export).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
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


@dataclass(frozen=True)
class _Layout:
    """Which bins stage B's groups compute, for n_fft = p q.

    Group g holds Y[., g] and Y[., q - g] (one the other's conjugate) and outputs the bins Q k1 + k2 of the
    one-sided spectrum with k2 = g or q - g; group 0 holds the real Y[., 0] and, for an even q, the real
    Y[., q / 2]. `slots[g][m]` is (bin, k1, k2, a, b): Y[., k2] = a first input + b second input (a in
    {0, 1}, b in {0, 1, i, -i}); groups shorter than the longest are padded with unused slots (bin None,
    a = b = 0)."""

    p: int
    q: int
    slots: tuple[tuple[tuple[int | None, int, int, complex, complex], ...], ...]

    @staticmethod
    def of(n_fft: int, p: int) -> _Layout:
        q = n_fft // p
        groups = []
        for g in range((q + 1) // 2):
            # Y[., g] = Re + i Im and Y[., q - g] = Re - i Im; group 0: Y[., 0] and Y[., q / 2] as they are
            k2s = [(g, 1, 1j), (q - g, 1, -1j)] if g else [(0, 1, 0)] + [(q // 2, 0, 1)] * (q % 2 == 0)
            groups.append([(q * k1 + k2, k1, k2, a, b) for k2, a, b in k2s for k1 in range(p)])
        kept = [[slot for slot in group if slot[0] <= n_fft // 2] for group in groups]
        width = max(len(group) for group in kept)
        padded = [group + [(None, 0, 0, 0, 0)] * (width - len(group)) for group in kept]
        return _Layout(p, q, tuple(tuple(group) for group in padded))

    @property
    def groups(self) -> int:
        return len(self.slots)

    @property
    def width(self) -> int:
        return len(self.slots[0])

    def multiply_adds(self) -> int:
        """Per frame: stage A (p groups, 2 x groups outputs, kernel q) and stage B (per group 2 x width
        outputs from 2 p inputs)."""
        return self.p * 2 * self.groups * self.q + self.groups * 2 * self.width * 2 * self.p


def _split(n_fft: int, hop: int) -> int:
    """The P of the two stages: the divisor of gcd(n_fft, hop) with the fewest multiply-adds per frame."""
    g = math.gcd(n_fft, hop)
    return min((p for p in range(1, g + 1) if g % p == 0), key=lambda p: _Layout.of(n_fft, p).multiply_adds())


class ConvMFCC(nn.Module):
    """`(batch, samples)` float32 -> `(batch, n_mfcc, frames)`, as `MFCC._mfcc` (centred, reflect-padded
    frames; Hann window; power; mel; log; DCT)."""

    window_rows: Tensor  # (P, 1, 1, Q): window[n1 + P n2]
    dft_q: Tensor  # (1, 2, G, Q): per group g, the rows of Re Y[g] and Im Y[g] (group 0: Y[0], Y[Q / 2])
    twiddles: Tensor  # (2, Q, P): cos and -sin of 2 pi n1 k2 / n_fft
    dft_p: Tensor  # (2, P, P): cos and -sin of 2 pi n1 k1 / P
    slot_k1: Tensor  # (G, W): k1 of each output slot
    slot_k2: Tensor  # (G, W): k2 of each output slot
    slot_inputs: Tensor  # (2, 2, G, W, 1): re and im of each slot's a and b (0, 1, i or -i)
    mel_freqs: Tensor  # (G * W,): the frequency of each bin in `power`'s order
    mel_points: Tensor  # (n_mels + 2,): the filters' corner frequencies
    stored_mel: Tensor  # (n_mels, G * W): the filterbank, when the formula does not reproduce it
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
        layout = _Layout.of(n_fft, _split(n_fft, hop))
        p, q, groups, width = layout.p, layout.q, layout.groups, layout.width
        self.n_fft, self.hop, self.p, self.q, self.groups, self.width = n_fft, hop, p, q, groups, width
        window = torch.zeros(n_fft, dtype=torch.float64)  # torch.stft centres a shorter window in n_fft
        left = (n_fft - win_length) // 2
        window[left : left + win_length] = spec.window.double()
        n1, n2 = torch.arange(p, dtype=torch.float64), torch.arange(q, dtype=torch.float64)

        # The stages' weights are products of these small tables, formed in `forward`: an exported file
        # stores the tables (23 KiB for 512/160), and its runtime multiplies them out once when it loads.
        def trig(angle: Tensor) -> Tensor:
            return torch.stack([torch.cos(angle), -torch.sin(angle)]).float()

        self.register_buffer(
            "window_rows", window.view(q, p).t().reshape(p, 1, 1, q).float(), persistent=False
        )
        g = torch.arange(groups, dtype=torch.float64)[:, None]
        rows = trig(2 * math.pi * g * n2 / q)  # (2, G, Q): Re and Im of Y[g]
        rows[1, 0] = torch.cos(math.pi * n2).float() if q % 2 == 0 else 0.0  # Im Y[0] = 0: Y[Q / 2] instead
        self.register_buffer("dft_q", rows[None], persistent=False)
        k = torch.arange(q, dtype=torch.float64)[:, None]
        self.register_buffer("twiddles", trig(2 * math.pi * k * n1 / n_fft), persistent=False)
        self.register_buffer("dft_p", trig(2 * math.pi * n1[:, None] * n1 / p), persistent=False)
        flat = [slot for group in layout.slots for slot in group]
        k1s, k2s = (torch.tensor([s[i] for s in flat]).view(groups, width) for i in (1, 2))
        self.register_buffer("slot_k1", k1s, persistent=False)
        self.register_buffer("slot_k2", k2s, persistent=False)
        # (a or b, re/im, G, W, 1): Y[., k2] = a first input + b second input
        coefs = [(complex(a), complex(b)) for _, _, _, a, b in flat]
        inputs = [[[c[i].real for c in coefs], [c[i].imag for c in coefs]] for i in (0, 1)]
        self.register_buffer(
            "slot_inputs", torch.tensor(inputs).view(2, 2, groups, width, 1), persistent=False
        )

        fb = mfcc.fb  # (n_fft // 2 + 1, n_mels)
        # bin of each of `power`'s rows; the unused slots get n_fft, past the one-sided spectrum
        bins = torch.tensor([n_fft if s[0] is None else s[0] for s in flat])
        self.bins = bins  # for tests: `power(audio)[:, i]` is bin `bins[i]` of the spectrum
        keep = bins < fb.shape[0]
        # The mel filterbank and the DCT are formed in `forward` too, by torchaudio's own float32 formulas
        # from their frequencies and indices: bit-identical to its matrices (checked here, else they are
        # stored whole), and a few hundred bytes in a file instead of 70 KiB.
        scale = mfcc.transform.MelSpectrogram.mel_scale
        all_freqs = torch.linspace(0, scale.sample_rate // 2, fb.shape[0])
        freqs = torch.full((len(bins),), OUT_OF_BAND_HZ)  # unused slots: all-zero rows
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
        """`(n_mels, G * W)`: torchaudio's triangular filterbank (melscale_fbanks, norm None) for the bins in
        the order of `power`."""
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
        """The two convolutions' weights: `(P * 2 * G, 1, Q)` (per n1: the windowed rows of Re Y[g], then of
        Im Y[g]) and `(G * 2 * W, 2 * P, 1)` (per group: the real parts of its W bins, then their imaginary
        parts, each from the group's two inputs over n1)."""
        stage_a = (self.window_rows * self.dft_q).reshape(self.p * 2 * self.groups, 1, self.q)
        (tr, ti), (dr, di) = self.twiddles[:, self.slot_k2], self.dft_p[:, self.slot_k1]  # (G, W, P)
        re, im = tr * dr - ti * di, tr * di + ti * dr  # exp(-2 pi i n1 (Q k1 + k2) / n_fft)
        (ar, ai), (br, bi) = self.slot_inputs  # (G, W, 1) each
        # a slot's output = (re + i im) (a x first input + b x second input), a and b in {0, 1, i, -i}
        real = torch.cat([re * ar - im * ai, re * br - im * bi], -1)  # (G, W, 2 P)
        imag = torch.cat([re * ai + im * ar, re * bi + im * br], -1)
        stage_b = torch.stack([real, imag], 1)  # (G, 2, W, 2 P)
        return stage_a, stage_b.reshape(self.groups * 2 * self.width, 2 * self.p, 1)

    def forward(self, audio: Tensor) -> Tensor:
        power = self.power(audio)
        log_mel = torch.log(torch.matmul(self.mel_matrix(), power) + LOG_OFFSET)  # (batch, n_mels, frames)
        return torch.matmul(self.dct_matrix(), log_mel)

    def power(self, audio: Tensor) -> Tensor:
        """`(batch, samples)` -> `(batch, G * W, frames)` power spectrum, the bins in the order of `bins`."""
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
        y = y.reshape(batch, self.p, 2, self.groups, n_frames).permute(0, 3, 2, 1, 4)  # (batch, g, 2, n1, t)
        y = y.reshape(batch, self.groups * 2 * self.p, 1, n_frames)
        x = F.conv2d(y, stage_b.unsqueeze(2), groups=self.groups)  # (batch, G 2 W, 1, frames)
        x = x.reshape(batch, self.groups, 2, self.width, n_frames)
        return (x * x).sum(2).reshape(batch, self.groups * self.width, n_frames)
