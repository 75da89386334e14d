"""Range coding of integer symbols under integer frequency tables, with an escape for the tails.

Shared by the learned agents: ``factorized_prior`` codes its latent with one table per channel;
``hyperprior`` codes its hyper-latent the same way and its latent with one table per scale
(``agents/hyperprior/entropy.py`` is a link to this file, so both bundles carry the same source).

A table codes the integers ``offset .. offset + length - 2`` and one *escape* symbol (index
``length - 1``); a value outside the range is coded as the escape symbol, and after all symbols of
the group its value follows as ``v + 32768`` under a uniform model over 16 bits (values are clamped
to the int16 range first, which trained models never reach: their latents stay within about +-100).
Frequencies are integers summing to ``2**PMF_PRECISION_BITS``; ``freq / 2**16`` is an exact float64
division, so encoder and decoder hand constriction bit-identical probabilities on any machine.

The coder is constriction's ``queue.RangeEncoder`` / ``RangeDecoder`` (32-bit words, FIFO order):
groups are decoded in the order they were encoded. Imports only numpy and constriction.
"""

from __future__ import annotations

from collections.abc import Sequence

import constriction
import numpy as np

#: Integer probability tables sum to exactly this (16-bit fixed point).
PMF_PRECISION_BITS = 16

_ESCAPE_BIAS = 1 << 15
_ESCAPE_MODEL = constriction.stream.model.Uniform(1 << 16)


class IntegerTables:
    """Categorical models built from integer frequency tables, one per row.

    Args:
        pmf: int ``[K, L]`` frequencies; row k is valid up to ``length[k]`` and sums to 2**16 there.
        offset: int ``[K]``, the value coded by index 0 of each row.
        length: int ``[K]``, symbols per row including the escape symbol (the last one).
    """

    def __init__(self, pmf: np.ndarray, offset: Sequence[int], length: Sequence[int]) -> None:
        self.offsets = [int(v) for v in offset]
        self.lengths = [int(v) for v in length]
        probs = np.asarray(pmf, dtype=np.float64) / float(1 << PMF_PRECISION_BITS)
        self._probs = probs
        self._models: dict[int, constriction.stream.model.Categorical] = {}

    def __len__(self) -> int:
        return len(self.offsets)

    def model(self, row: int) -> constriction.stream.model.Categorical:
        """The constriction model of row ``row`` (built on first use)."""
        if row not in self._models:
            self._models[row] = constriction.stream.model.Categorical(
                self._probs[row, : self.lengths[row]], perfect=False
            )
        return self._models[row]


def encode_group(
    encoder: constriction.stream.queue.RangeEncoder, tables: IntegerTables, row: int, values: np.ndarray
) -> None:
    """Append the integers ``values`` (any int dtype, 1-D) coded under table ``row``, then their escapes."""
    escape = tables.lengths[row] - 1
    index = values.astype(np.int64) - tables.offsets[row]
    outside = (index < 0) | (index >= escape)
    index[outside] = escape
    encoder.encode(index.astype(np.int32), tables.model(row))
    if outside.any():
        clamped = np.clip(values[outside].astype(np.int64), -_ESCAPE_BIAS, _ESCAPE_BIAS - 1)
        encoder.encode((clamped + _ESCAPE_BIAS).astype(np.int32), _ESCAPE_MODEL)


def decode_group(
    decoder: constriction.stream.queue.RangeDecoder, tables: IntegerTables, row: int, count: int
) -> np.ndarray:
    """Inverse of :func:`encode_group`: the next ``count`` integers (int32, 1-D) under table ``row``."""
    index = np.asarray(decoder.decode(tables.model(row), count), dtype=np.int32)
    escape = tables.lengths[row] - 1
    outside = index == escape
    out = index + np.int32(tables.offsets[row])
    if outside.any():
        out[outside] = decoder.decode(_ESCAPE_MODEL, int(outside.sum())) - _ESCAPE_BIAS
    return out


def encode_channels(
    encoder: constriction.stream.queue.RangeEncoder, tables: IntegerTables, symbols: np.ndarray
) -> None:
    """Code integer latents ``[C, h, w]`` channel by channel, channel c under table row c."""
    for c in range(symbols.shape[0]):
        encode_group(encoder, tables, c, symbols[c].ravel())


def decode_channels(
    decoder: constriction.stream.queue.RangeDecoder, tables: IntegerTables, shape: tuple[int, int, int]
) -> np.ndarray:
    """Inverse of :func:`encode_channels`: int32 latents of ``shape`` ``(C, h, w)``."""
    channels, h, w = shape
    out = np.empty((channels, h * w), dtype=np.int32)
    for c in range(channels):
        out[c] = decode_group(decoder, tables, c, h * w)
    return out.reshape(shape)


def words_to_bytes(encoder: constriction.stream.queue.RangeEncoder) -> bytes:
    """The encoder's compressed words as little-endian bytes."""
    words: np.ndarray = encoder.get_compressed()  # constriction ships no type information
    return words.astype("<u4").tobytes()


def decoder_for(payload: bytes) -> constriction.stream.queue.RangeDecoder:
    """A range decoder over ``payload`` (a whole number of little-endian 32-bit words)."""
    return constriction.stream.queue.RangeDecoder(np.frombuffer(payload, dtype="<u4").astype(np.uint32))
