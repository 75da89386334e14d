"""Networks of the mean-scale hyperprior image codec, with gain units for its qualities.

References:
----------
[B18] J. Ballé, D. Minnen, S. Singh, S. J. Hwang, N. Johnston, "Variational image compression with a
      scale hyperprior", ICLR 2018.
[M18] D. Minnen, J. Ballé, G. Toderici, "Joint autoregressive and hierarchical priors for learned
      image compression", NeurIPS 2018 (the mean-scale hyperprior, used here without the
      autoregressive context model).
[C21] Z. Cui, J. Wang, S. Gao, T. Guo, Y. Feng, B. Bai, "Asymmetric gained deep image compression
      with continuous rate adaptation", CVPR 2021 (gain / inverse-gain vectors: one network, many
      rates).
[B19] J. Ballé, N. Johnston, D. Minnen, "Integer networks for data compression with latent-variable
      models", ICLR 2019 (why the entropy model's parameters must be computed exactly on both sides).

Dataflow (N = 128, M = 192, Q qualities)::

    x ─pad×64─▶ g_a ─▶ y ─⊙gain[q]─▶ y_q ─▶ h_a ─▶ z ─round─▶ ẑ ──(factorized density, integer tables)──▶ bits
                                       │                      └─▶ h_s (integer arithmetic) ─▶ μ, scale index
                                       └─ round(y_q − μ) = s ──(Gaussian tables by scale index)──▶ bits
    ŷ = (s + μ) ⊙ inv_gain[q] ─▶ g_s ─crop─▶ x̂

g_a / g_s are those of ``factorized.py`` ([B18]'s, GDN / IGDN between 5×5 stride-2 convolutions);
h_a / h_s follow [M18] (h_s outputs 2M channels: scales and means of y_q). The hyper-synthesis
runs in integer arithmetic at coding time (:class:`IntegerHyperSynthesis`) so the decoder derives
the same means and scale indexes as the encoder on any machine and device [B19].

This module imports only torch, numpy and its siblings ``factorized`` and ``entropy``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

try:  # imported as part of a package (agents.hyperprior, tests)
    from .entropy import PMF_PRECISION_BITS
    from .factorized import AnalysisTransform, FactorizedDensity, SynthesisTransform
except ImportError:  # the sandbox imports this file as a top-level module next to its siblings
    from entropy import PMF_PRECISION_BITS  # type: ignore[import-not-found, no-redef]
    from factorized import (  # type: ignore[import-not-found, no-redef]
        AnalysisTransform,
        FactorizedDensity,
        SynthesisTransform,
    )

#: Total downsampling factor: 16 in g_a, 4 more in h_a.
STRIDE = 64

#: Scales of the Gaussian tables: 64 values log-spaced over [0.11, 256], CompressAI's
#: ``get_scale_table()`` (0.11 is the lower bound of its GaussianConditional).
SCALE_MIN, SCALE_MAX, SCALE_LEVELS = 0.11, 256.0, 64

#: Fixed-point formats of the integer hyper-synthesis: weights carry 2**-14, activations 2**-10.
#: With |ẑ| <= 255, |weights| <= 2 and at most 5·5·288 terms per output, every partial sum stays
#: below 2**53, so float64 convolutions of these integers are exact whatever the summation order.
WEIGHT_BITS, ACTIVATION_BITS = 14, 10


def _conv(c_in: int, c_out: int, kernel: int, stride: int) -> nn.Conv2d:
    return nn.Conv2d(c_in, c_out, kernel_size=kernel, stride=stride, padding=kernel // 2)


def _deconv(c_in: int, c_out: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(c_in, c_out, kernel_size=5, stride=2, padding=2, output_padding=1)


class HyperAnalysis(nn.Sequential):
    """h_a of [M18]: conv3×3/1, ReLU, conv5×5/2, ReLU, conv5×5/2. ``[B, M, h, w]`` -> ``[B, N, h/4, w/4]``."""

    def __init__(self, n: int, m: int) -> None:
        super().__init__(_conv(m, n, 3, 1), nn.ReLU(), _conv(n, n, 5, 2), nn.ReLU(), _conv(n, n, 5, 2))


class HyperSynthesis(nn.Sequential):
    """h_s of [M18]: deconv5×5/2, ReLU, deconv5×5/2, ReLU, conv3×3/1 to 2M channels (scales, means).

    Input ``[B, N, h, w]`` (rounded hyper-latent); output ``[B, 2M, 4h, 4w]``: channels ``:M`` are
    raw scales (bounded below by :data:`SCALE_MIN` where used), ``M:`` the means.
    """

    def __init__(self, n: int, m: int) -> None:
        super().__init__(
            _deconv(n, m), nn.ReLU(), _deconv(m, m * 3 // 2), nn.ReLU(), _conv(m * 3 // 2, 2 * m, 3, 1)
        )


def scale_table() -> np.ndarray:
    """The :data:`SCALE_LEVELS` scales of the Gaussian tables (float64, increasing)."""
    return np.exp(np.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), SCALE_LEVELS))


def scale_indexes(scales: torch.Tensor) -> torch.Tensor:
    """Index of the smallest table scale >= ``scales`` (clamped to the table), int64, same shape.

    Rounding the scale up costs a little rate but never under-covers the tails (CompressAI's
    ``GaussianConditional.build_indexes``).
    """
    table = torch.from_numpy(scale_table()).to(scales.device, scales.dtype)
    return torch.bucketize(scales, table).clamp_(max=SCALE_LEVELS - 1)


def gaussian_pmf_tables(tail_mass: float = 1e-9) -> dict[str, torch.Tensor]:
    """Integer tables of a zero-mean Gaussian discretised to unit bins, one per table scale.

    Row k codes the integers ``-R_k .. R_k`` with ``R_k = ceil(s_k · Φ⁻¹(1 − tail_mass/2))`` plus an
    escape symbol that carries both tails; ``p(v) = Φ((v + ½)/s_k) − Φ((v − ½)/s_k)``. Frequencies
    are integers >= 1 summing to ``2**PMF_PRECISION_BITS`` (the construction of CompressAI's
    ``GaussianConditional.update``). Computed in float64 once, at export.

    Returns ``{"pmf": int32 [K, Lmax], "offset": int32 [K], "length": int32 [K]}``.
    """
    tail = float(-torch.special.ndtri(torch.tensor(tail_mass / 2, dtype=torch.float64)))
    total = 1 << PMF_PRECISION_BITS
    rows = []
    for s in scale_table():
        radius = math.ceil(s * tail)
        v = torch.arange(-radius, radius + 1, dtype=torch.float64)
        mass = (torch.special.ndtr((v + 0.5) / s) - torch.special.ndtr((v - 0.5) / s)).numpy()
        probs = np.append(mass, max(1.0 - mass.sum(), 0.0))
        probs /= probs.sum()
        freq = np.maximum(np.round(probs * (total - len(probs))).astype(np.int64), 0) + 1
        freq[np.argmax(freq)] += total - int(freq.sum())
        rows.append((freq, -radius))
    width = max(len(f) for f, _ in rows)
    table = np.zeros((len(rows), width), dtype=np.int32)
    for k, (freq, _) in enumerate(rows):
        table[k, : len(freq)] = freq
    return {
        "pmf": torch.from_numpy(table),
        "offset": torch.tensor([o for _, o in rows], dtype=torch.int32),
        "length": torch.tensor([len(f) for f, _ in rows], dtype=torch.int32),
    }


class Hyperprior(nn.Module):
    """The whole trainable model: transforms, hyper-transforms, density of z, gains per quality.

    ``gain`` / ``inv_gain`` are ``[Q, M]`` log-gains ([C21]): quality q scales the latent by
    ``exp(gain[q])`` before quantisation and by ``exp(inv_gain[q])`` after.
    """

    def __init__(self, n: int, m: int, qualities: int) -> None:
        super().__init__()
        self.n, self.m, self.qualities = n, m, qualities
        self.g_a = AnalysisTransform(n, m)
        self.g_s = SynthesisTransform(n, m)
        self.h_a = HyperAnalysis(n, m)
        self.h_s = HyperSynthesis(n, m)
        self.density = FactorizedDensity(n)
        # Initial gains spread the qualities ~1.4x apart in latent amplitude around 1.
        start = torch.linspace(-1.0, 1.5, qualities).view(qualities, 1).expand(qualities, m)
        self.gain = nn.Parameter(start.clone())
        self.inv_gain = nn.Parameter(-start.clone())

    def forward(self, x: torch.Tensor, quality: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Training pass with quantisation proxies.

        Args:
            x: float ``[B, 3, H, W]`` in [0, 1], H and W multiples of :data:`STRIDE`.
            quality: int64 ``[B]``, 0-based quality index per image.

        Returns:
            ``(x_hat, bits_y, bits_z)``: reconstruction ``[B, 3, H, W]`` and the estimated bits of
            the latent and hyper-latent per image (float ``[B]``). Rates use additive uniform
            noise [B18]; the synthesis sees the rounded latent with a straight-through gradient
            ("mixed" quantisation, Minnen & Singh, ICIP 2020).
        """
        gain = torch.exp(self.gain[quality])[:, :, None, None]
        inv_gain = torch.exp(self.inv_gain[quality])[:, :, None, None]
        y = self.g_a(x) * gain
        z = self.h_a(y)
        z_noisy = z + torch.empty_like(z).uniform_(-0.5, 0.5)
        bits_z = -torch.log2(self.density.likelihood(z_noisy).clamp_min(1e-9)).sum(dim=(1, 2, 3))
        z_hat = z + (torch.round(z) - z).detach()
        scales_raw, means = self.h_s(z_hat).chunk(2, dim=1)
        scales = scales_raw.clamp_min(SCALE_MIN)
        y_noisy = y + torch.empty_like(y).uniform_(-0.5, 0.5)
        bits_y = -torch.log2(gaussian_likelihood(y_noisy, means, scales).clamp_min(1e-9)).sum(dim=(1, 2, 3))
        y_hat = y + (torch.round(y - means) + means - y).detach()
        x_hat = self.g_s(y_hat * inv_gain)
        return x_hat, bits_y, bits_z


def gaussian_likelihood(y: torch.Tensor, means: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """Mass of a unit bin around ``y`` under N(means, scales²), elementwise; computed on the lower tail.

    Using ``|y − μ|`` and the lower tail (``Φ(−|v|+½) − Φ(−|v|−½)`` via erfc) keeps precision far
    from the mean, as CompressAI's ``GaussianConditional._likelihood`` does.
    """
    v = torch.abs(y - means)
    upper = 0.5 * torch.erfc(-(0.5 - v) / (scales * math.sqrt(2.0)))
    lower = 0.5 * torch.erfc(-(-0.5 - v) / (scales * math.sqrt(2.0)))
    return upper - lower


class IntegerHyperSynthesis:
    """h_s in fixed-point integer arithmetic: the same means and scale indexes on every machine.

    Weights are stored as integers ``round(w · 2**WEIGHT_BITS)``; each layer's integer sum is rescaled
    to ``ACTIVATION_BITS`` fractional bits by a floor division by a power of two, then ReLU. The
    convolutions run in float64 on CPU, where every operand and partial sum is an integer below
    2**53, so the results are exact whatever the library's summation order [B19].

    Args:
        state: the ``"h_s_int"`` entry of the weights file (see :func:`integer_hyper_synthesis`).
    """

    def __init__(self, state: dict[str, torch.Tensor]) -> None:
        self.layers = [(state[f"w{k}"].double(), state[f"b{k}"].double()) for k in range(3)]
        # Largest sum of |weights| feeding one output: bounds every partial sum (see __call__).
        # Transposed convolutions store [in, out, k, k], convolutions [out, in, k, k].
        self._fan_in_abs = [
            float(w.abs().sum(dim=(0, 2, 3) if k < 2 else (1, 2, 3)).max()) for k, (w, _) in enumerate(self.layers)
        ]

    def __call__(self, z_hat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Integer hyper-latent ``[N, h, w]`` -> (means float64 ``[M, 4h, 4w]``, scale indexes int64 ``[M, 4h, 4w]``).

        Means are exact dyadic rationals (multiples of 2**-(WEIGHT_BITS + ACTIVATION_BITS)).
        """
        a = torch.from_numpy(np.ascontiguousarray(z_hat, dtype=np.float64)).unsqueeze(0)
        a = a * float(1 << ACTIVATION_BITS)  # input in activation fixed point
        for k, (w, b) in enumerate(self.layers):
            bound = float(a.abs().max()) * self._fan_in_abs[k] + float(b.abs().max())
            if bound >= 2.0**53:
                raise ValueError(
                    f"hyper-synthesis layer {k}: partial sums up to {bound:.3g} would not be exact in float64"
                )
            if k < 2:
                a = F.conv_transpose2d(a, w, b, stride=2, padding=2, output_padding=1)
                a = torch.floor(a / float(1 << WEIGHT_BITS)).clamp_min_(0.0)  # back to ACTIVATION_BITS, ReLU
            else:
                a = F.conv2d(a, w, b, padding=1)
        out = a[0] / float(1 << (WEIGHT_BITS + ACTIVATION_BITS))  # exact: division by a power of two
        m = out.shape[0] // 2
        scales, means = out[:m], out[m:]
        return means.numpy(), scale_indexes(scales).numpy()


def integer_hyper_synthesis(h_s: HyperSynthesis) -> dict[str, torch.Tensor]:
    """Fixed-point export of a trained h_s for :class:`IntegerHyperSynthesis`.

    Layer k's weights become ``round(w · 2**WEIGHT_BITS)``; its bias, which adds to sums carrying
    ``WEIGHT_BITS + ACTIVATION_BITS`` fractional bits, becomes ``round(b · 2**(WEIGHT_BITS + ACTIVATION_BITS))``.
    Returns int16 weights and int64 biases ``{"w0", "b0", "w1", "b1", "w2", "b2"}``.

    Raises:
        ValueError: a weight is too large for int16 at this precision (|w| >= 2).
    """
    convs = [layer for layer in h_s if isinstance(layer, nn.Conv2d | nn.ConvTranspose2d)]
    out: dict[str, torch.Tensor] = {}
    for k, conv in enumerate(convs):
        assert conv.bias is not None
        weight = torch.round(conv.weight.detach().double() * (1 << WEIGHT_BITS))
        if weight.abs().max() > torch.iinfo(torch.int16).max:
            raise ValueError(f"h_s layer {k} has |weight| >= 2; lower WEIGHT_BITS to store it as int16")
        out[f"w{k}"] = weight.to(torch.int16)
        out[f"b{k}"] = torch.round(conv.bias.detach().double() * (1 << (WEIGHT_BITS + ACTIVATION_BITS))).to(torch.int64)
    return out
