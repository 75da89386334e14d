"""Networks of the factorized-prior image codec.

References:
----------
[B17] J. Ballé, V. Laparra, E. P. Simoncelli, "End-to-end optimized image compression", ICLR 2017.
[B18] J. Ballé, D. Minnen, S. Singh, S. J. Hwang, N. Johnston, "Variational image compression with a
      scale hyperprior", ICLR 2018 (the "factorized prior" baseline, and the non-parametric density
      of its appendix 6.1).
[B16] J. Ballé, V. Laparra, E. P. Simoncelli, "Density modeling of images using a generalized
      normalization transformation", ICLR 2016 (GDN).

This module imports only torch, numpy and its sibling ``entropy``: it runs inside the agent sandbox,
where only the agent's directory is on ``sys.path``. ``agents/hyperprior/factorized.py`` is a link to
this file: the hyperprior reuses GDN, the transforms and the factorized density.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

#: Total downsampling factor of the analysis transform (four stride-2 convolutions).
STRIDE = 16

#: Fixed gain from the last analysis convolution to the latent, undone at the synthesis input.
#: With PyTorch's default initialisation the latent would start at std ~0.05 and round to 0
#: everywhere, leaving the synthesis no signal to learn from; a constant gain (rather than larger
#: initial weights) keeps Adam's relative step size on the outer layers unchanged.
LATENT_SCALE = 16.0

try:  # imported as part of a package (agents.factorized_prior, agents.hyperprior, tests)
    from .entropy import PMF_PRECISION_BITS
except ImportError:  # the sandbox imports this file as a top-level module next to entropy.py
    from entropy import PMF_PRECISION_BITS  # type: ignore[import-not-found, no-redef]


class GDN(nn.Module):
    """Generalized divisive normalization [B16] as used in [B17], with exponents fixed to 2 and 1/2.

    Forward: ``y_i = x_i / sqrt(beta_i + sum_j gamma_ij * x_j**2)``; inverse (IGDN, used in the
    synthesis transform [B17]): ``y_i = x_i * sqrt(beta_i + sum_j gamma_ij * x_j**2)``.

    ``beta`` and ``gamma`` are stored as square roots and squared on use, which keeps them
    non-negative without clipping; ``beta`` gets a small pedestal so the square root never sees 0.
    Input and output: float tensor ``[B, C, H, W]``.
    """

    _BETA_FLOOR = 1e-6

    def __init__(self, channels: int, inverse: bool = False) -> None:
        super().__init__()
        self.inverse = inverse
        self.beta_sqrt = nn.Parameter(torch.ones(channels))
        # beta = 1 and gamma = 0.1 * I initially, the defaults of Ballé's tensorflow-compression GDN.
        # Off-diagonal roots start at 1e-3, not 0: the gradient of gamma = root**2 vanishes at
        # root = 0, so zeros would never learn.
        eye = torch.eye(channels)
        self.gamma_sqrt = nn.Parameter(math.sqrt(0.1) * eye + 1e-3 * (1 - eye))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(I)GDN of float ``[B, C, H, W]``, same shape out."""
        beta = self.beta_sqrt**2 + self._BETA_FLOOR
        gamma = self.gamma_sqrt**2
        channels = gamma.shape[0]
        norm = torch.sqrt(F.conv2d(x * x, gamma.view(channels, channels, 1, 1), beta))
        return x * norm if self.inverse else x / norm


def _conv(c_in: int, c_out: int) -> nn.Conv2d:
    """5x5 convolution with stride 2 ("same" padding), the building block of [B18]'s transforms."""
    return nn.Conv2d(c_in, c_out, kernel_size=5, stride=2, padding=2)


def _deconv(c_in: int, c_out: int) -> nn.ConvTranspose2d:
    """5x5 transposed convolution that exactly doubles height and width."""
    return nn.ConvTranspose2d(c_in, c_out, kernel_size=5, stride=2, padding=2, output_padding=1)


class AnalysisTransform(nn.Sequential):
    """g_a of [B18] (factorized-prior baseline): 4 x (conv 5x5 stride 2), GDN between them.

    Input: float ``[B, 3, H, W]`` in [0, 1] with H, W multiples of :data:`STRIDE`.
    Output: latent ``y``, float ``[B, M, H/16, W/16]``.
    """

    def __init__(self, n: int, m: int) -> None:
        super().__init__(
            _conv(3, n), GDN(n), _conv(n, n), GDN(n), _conv(n, n), GDN(n), _conv(n, m),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image ``[B, 3, H, W]`` -> latent ``[B, M, H/16, W/16]`` (see the class docstring)."""
        y: torch.Tensor = super().forward(x)  # type: ignore[no-untyped-call]  # unannotated in torch
        return y * LATENT_SCALE


class SynthesisTransform(nn.Sequential):
    """g_s of [B18]: 4 x (transposed conv 5x5 stride 2), inverse GDN between them.

    Input: quantized latent, float ``[B, M, h, w]``. Output: float ``[B, 3, 16h, 16w]``, nominally
    in [0, 1] (not clamped here; the codec clamps when converting to uint8).
    """

    def __init__(self, n: int, m: int) -> None:
        super().__init__(
            _deconv(m, n), GDN(n, inverse=True), _deconv(n, n), GDN(n, inverse=True),
            _deconv(n, n), GDN(n, inverse=True), _deconv(n, 3),
        )

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        """Latent ``[B, M, h, w]`` -> image ``[B, 3, 16h, 16w]`` (see the class docstring)."""
        x: torch.Tensor = super().forward(y / LATENT_SCALE)  # type: ignore[no-untyped-call]
        return x


class FactorizedDensity(nn.Module):
    """Per-channel learned univariate density, the non-parametric model of [B18], appendix 6.1.

    For each channel c a cumulative function ``F_c: R -> (0, 1)`` is built as a composition of
    K = 4 vector maps ``f_k(x) = g_k(H_k x + b_k)`` with hidden widths (3, 3, 3); ``H_k`` are kept
    elementwise positive via softplus (so ``F_c`` is monotone) and ``g_k(x) = x + tanh(a_k) * tanh(x)``
    for k < K, ``g_K = sigmoid``. The probability mass of an integer ``v`` under the density
    convolved with a unit-width uniform (matching additive-noise training and rounding at test
    time) is ``F_c(v + 1/2) - F_c(v - 1/2)``.

    Only training and table export use this module; the shipped codec uses the integer tables
    that :func:`quantized_pmf_tables` derives from it.
    """

    _WIDTHS = (1, 3, 3, 3, 1)
    _INIT_SCALE = 10.0  # initial density spread, in latent units

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels
        layers = len(self._WIDTHS) - 1
        # Initialise so that F_c is roughly a logistic CDF of scale _INIT_SCALE, as in
        # tensorflow-compression's EntropyBottleneck: each of the `layers` matrices contributes a
        # factor _INIT_SCALE**(-1/layers), split across its outputs.
        scale = self._INIT_SCALE ** (1.0 / layers)
        self.matrices = nn.ParameterList()
        self.biases = nn.ParameterList()
        self.factors = nn.ParameterList()
        for k in range(layers):
            d_in, d_out = self._WIDTHS[k], self._WIDTHS[k + 1]
            init = math.log(math.expm1(1.0 / scale / d_out))  # softplus^{-1}(1 / (scale * d_out))
            self.matrices.append(nn.Parameter(torch.full((channels, d_out, d_in), init)))
            self.biases.append(nn.Parameter(torch.rand(channels, d_out, 1) - 0.5))
            if k < layers - 1:
                self.factors.append(nn.Parameter(torch.zeros(channels, d_out, 1)))

    def logits_cdf(self, x: torch.Tensor) -> torch.Tensor:
        """``logit(F_c(x))`` for ``x`` of shape ``[C, 1, L]`` (one row of L values per channel)."""
        for k, (matrix, bias) in enumerate(zip(self.matrices, self.biases, strict=True)):
            x = torch.matmul(F.softplus(matrix), x) + bias
            if k < len(self.factors):
                x = x + torch.tanh(self.factors[k]) * torch.tanh(x)
        return x

    def likelihood(self, y: torch.Tensor) -> torch.Tensor:
        """Probability mass of each element of ``y`` (float ``[B, C, h, w]``) over a unit bin.

        Returns a tensor of the same shape, in [0, 1]. The difference of sigmoids is taken on the
        side of the median where it is numerically stable (flipping the sign of both logits), the
        trick of tensorflow-compression's EntropyBottleneck.
        """
        b, c, h, w = y.shape
        flat = y.permute(1, 0, 2, 3).reshape(c, 1, -1)
        lower = self.logits_cdf(flat - 0.5)
        upper = self.logits_cdf(flat + 0.5)
        sign = -torch.sign(lower + upper).detach()
        lik = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return lik.reshape(c, b, h, w).permute(1, 0, 2, 3)


def quantized_pmf_tables(
    density: FactorizedDensity, max_abs: int = 255, tail_mass: float = 1e-6
) -> dict[str, torch.Tensor]:
    """Integer probability tables of the rounded latents, one per channel, plus an escape symbol.

    For channel c the coded alphabet is the integers ``offset[c] .. offset[c] + length[c] - 2``
    followed by one *escape* symbol (index ``length[c] - 1``). The range is the smallest one whose
    two tails each hold less than ``tail_mass`` of the density, capped at ``[-max_abs, max_abs]``;
    the escape symbol carries the tail mass. Frequencies are integers >= 1 that sum to exactly
    ``2**PMF_PRECISION_BITS``, so the probabilities the coder uses are exact dyadic rationals and
    do not depend on any float computation at coding time.

    Computed once after training, in float64 on CPU. Returns ``{"pmf": int32 [C, Kmax],
    "offset": int32 [C], "length": int32 [C]}``; ``pmf`` rows are zero beyond ``length``.
    """
    grid = torch.arange(-max_abs, max_abs + 1, dtype=torch.float64)
    density64 = FactorizedDensity(density.channels).double()
    density64.load_state_dict({k: v.double() for k, v in density.state_dict().items()})
    with torch.no_grad():
        rows = grid.view(1, 1, -1).expand(density.channels, 1, -1)
        cdf_lo = torch.sigmoid(density64.logits_cdf(rows - 0.5))[:, 0].numpy()
        cdf_hi = torch.sigmoid(density64.logits_cdf(rows + 0.5))[:, 0].numpy()
    total = 1 << PMF_PRECISION_BITS
    pmfs, offsets = [], []
    for c in range(density.channels):
        # first index whose lower edge has more than tail_mass below it, last index likewise above
        first = max(int(np.argmax(cdf_lo[c] > tail_mass)) - 1, 0)
        above = 1.0 - cdf_hi[c]
        last = min(int(len(grid) - 1 - np.argmax(above[::-1] > tail_mass)) + 1, len(grid) - 1)
        mass = np.maximum(cdf_hi[c, first : last + 1] - cdf_lo[c, first : last + 1], 0.0)
        escape = max(cdf_lo[c, first] + above[last], 0.0)
        probs = np.append(mass, escape)
        probs /= probs.sum()
        # every symbol keeps frequency >= 1; the rounding remainder goes to the most likely symbol
        freq = np.maximum(np.round(probs * (total - len(probs))).astype(np.int64), 0) + 1
        freq[np.argmax(freq)] += total - int(freq.sum())
        pmfs.append(freq)
        offsets.append(int(grid[first]))
    k_max = max(len(p) for p in pmfs)
    table = np.zeros((density.channels, k_max), dtype=np.int32)
    for c, freq in enumerate(pmfs):
        table[c, : len(freq)] = freq
    return {
        "pmf": torch.from_numpy(table),
        "offset": torch.tensor(offsets, dtype=torch.int32),
        "length": torch.tensor([len(p) for p in pmfs], dtype=torch.int32),
    }


def pad_to_stride(x: torch.Tensor, stride: int = STRIDE) -> torch.Tensor:
    """Replicate-pad ``[B, C, H, W]`` on the bottom and right to multiples of ``stride``.

    Replication (rather than zeros) avoids an artificial edge that would cost bits.
    """
    h, w = x.shape[-2:]
    pad_h, pad_w = -h % stride, -w % stride
    if pad_h == 0 and pad_w == 0:
        return x
    return F.pad(x, (0, pad_w, 0, pad_h), mode="replicate")


def unpad(x: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Inverse of :func:`pad_to_stride`: crop ``[..., H', W']`` to its top-left ``height x width``."""
    return x[..., :height, :width]
