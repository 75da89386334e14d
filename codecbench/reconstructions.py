"""A decoder's output as uint8 RGB: the one conversion every trusted figure is computed on.

- ``uint8``: taken as it is.
- a float type (float16, bfloat16, float32, float64): every value must be finite and within
  ``[-TOLERANCE, 1 + TOLERANCE]`` (a margin for the agent's own rounding, e.g. a sigmoid computed
  in float16); values are then clamped to [0, 1], multiplied by 255 and rounded half to even
  (``torch.round``), in float64. How many values lay outside [0, 1] and were clamped is reported.
- anything else, or floats beyond the margin, is INVALID_OUTPUT stating what came and what to do
  (a maximum above 1.5 looks like 0-255 pixel values: "divide by 255"; a minimum below -0.5 with a
  maximum within the margin of 1 looks like tanh output in [-1, 1]: "(x + 1) / 2").

The sandbox runtime converts the agent's output with :func:`to_uint8` before it leaves the agent's
process (a float32 reconstruction is four times the size of its uint8 form, and the frame limit
is sized for uint8 images at the pixel limit); the worker applies the same function again to
whatever arrives, so a forged float frame is held to the same rules. The conversion runs in
chunks of :data:`CHUNK_VALUES` values, so a float32 24-megapixel reconstruction needs about
32 MiB of float64 working memory beside its uint8 result, not 576 MiB.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from codecbench import errors
from codecbench.v1 import types_pb2

if TYPE_CHECKING:  # torch is imported where a reconstruction is converted (worker, sandbox), never by the CLI
    import torch

TOLERANCE = 0.05
# Above this maximum, the values are taken for 0-255 pixel values rather than rounding overshoot.
PIXEL_SCALE_HINT = 1.5
# Below this minimum (and at most 1 + TOLERANCE above), the values are taken for [-1, 1] output.
SIGNED_SCALE_HINT = -0.5
CHUNK_VALUES = 1 << 22
EXPECTED = "uint8, or float in [0, 1] (values within 0.05 of it are clamped)"


@dataclass(frozen=True)
class Converted:
    """A reconstruction as uint8, with the number of float values that were clamped to [0, 1]."""

    pixels: torch.Tensor
    clamped_values: int = 0


def _describe(recon: torch.Tensor) -> str:
    return f"tensor {list(recon.shape)} {str(recon.dtype).removeprefix('torch.')}"


def range_advice(low: float, high: float) -> str:
    """What an author should do about float output from ``low`` to ``high`` beyond the tolerance."""
    if high > PIXEL_SCALE_HINT:
        return ("the values look like 0-255 pixel values: divide by 255 (or return uint8, e.g. "
                "x.round().clamp(0, 255).to(torch.uint8))")
    if low < SIGNED_SCALE_HINT and high <= 1.0 + TOLERANCE:
        return "the values look like [-1, 1] output (tanh): map them to [0, 1] with (x + 1) / 2"
    return "clamp them to [0, 1] (x.clamp(0, 1)) or return uint8"


def to_uint8(
    recon: torch.Tensor, phase: types_pb2.Phase.ValueType = types_pb2.PHASE_DECODE, expected: str = EXPECTED
) -> Converted:
    """Converts a decoder's output (any shape) to uint8 by the rules in the module docstring.

    Args:
        recon: the agent's tensor, on the CPU; uint8 or a float dtype.
        phase: the phase named in an error.
        expected: what an error says was expected (the worker names the shape too).

    Returns:
        The uint8 tensor of the same shape and the count of clamped float values.

    Raises:
        errors.InvalidOutput: another dtype, NaN/inf values, or floats beyond the tolerance; the
            message states the observed minimum and maximum and what to do.
    """
    import torch

    if recon.dtype == torch.uint8:
        return Converted(recon, 0)
    if not recon.is_floating_point():
        raise errors.InvalidOutput(
            f"decode returned dtype {recon.dtype}, expected uint8 or a float type",
            phase=phase, expected=expected, actual=_describe(recon),
        )
    flat = recon.reshape(-1)
    out = torch.empty(flat.shape, dtype=torch.uint8)
    low, high, non_finite, clamped = float("inf"), float("-inf"), 0, 0
    for start in range(0, flat.numel(), CHUNK_VALUES):
        part = flat[start:start + CHUNK_VALUES].to(torch.float64)
        bad = int((~torch.isfinite(part)).sum())
        if bad:
            non_finite += bad
            continue
        low, high = min(low, float(part.min())), max(high, float(part.max()))
        clamped += int(((part < 0.0) | (part > 1.0)).sum())
        out[start:start + CHUNK_VALUES] = torch.round(part.clamp(0.0, 1.0) * 255.0).to(torch.uint8)
    if non_finite:
        raise errors.InvalidOutput(
            f"decode returned {non_finite} NaN/inf values",
            phase=phase, expected=expected, actual=f"{_describe(recon)} with {non_finite} NaN/inf values",
        )
    if low < -TOLERANCE or high > 1.0 + TOLERANCE:
        observed = f"float values from {low:.6g} to {high:.6g}"
        raise errors.InvalidOutput(
            f"decode returned {observed}, outside [0, 1] by more than {TOLERANCE:g}: {range_advice(low, high)}",
            phase=phase, expected=expected, actual=f"{_describe(recon)} with {observed}",
        )
    return Converted(out.reshape(recon.shape), clamped)


__all__ = [
    "CHUNK_VALUES", "PIXEL_SCALE_HINT", "SIGNED_SCALE_HINT", "TOLERANCE", "Converted", "range_advice", "to_uint8",
]
