"""Length-prefixed protobuf frames over a byte stream (worker <-> sandbox child).

A frame is a 4-byte little-endian unsigned length followed by that many bytes of one serialized
message. The reader refuses frames over a limit before reading them, so a hostile child cannot
make the worker allocate a gigabyte.
"""

from __future__ import annotations

import asyncio
import io
import struct
from typing import BinaryIO, TypeVar

from google.protobuf.message import Message

_HEADER = struct.Struct("<I")
M = TypeVar("M", bound=Message)
# A file object in binary mode, or a socket's ``makefile("rwb")`` (a BufferedRWPair, no BinaryIO).
ByteStream = BinaryIO | io.BufferedIOBase


class FrameError(Exception):
    """A frame over the size limit, a truncated frame, or bytes that do not parse."""


def encode_frame(message: Message) -> bytes:
    """One frame: the 4-byte little-endian length of the serialized ``message``, then its bytes."""
    payload = message.SerializeToString()
    return _HEADER.pack(len(payload)) + payload


def write_frame(stream: ByteStream, message: Message) -> None:
    """Writes one frame to a blocking binary stream and flushes it."""
    stream.write(encode_frame(message))
    stream.flush()


def read_frame(stream: ByteStream, message_type: type[M], max_bytes: int) -> M | None:
    """Reads one frame from a blocking stream; None at a clean end of stream.

    Raises:
        FrameError: oversized, truncated or unparsable frame.
    """
    header = stream.read(_HEADER.size)
    if not header:
        return None
    if len(header) < _HEADER.size:
        raise FrameError("stream ended inside a frame header")
    (length,) = _HEADER.unpack(header)
    if length > max_bytes:
        raise FrameError(f"frame of {length} bytes exceeds the limit of {max_bytes} bytes")
    payload = stream.read(length)
    if len(payload) < length:
        raise FrameError(f"stream ended after {len(payload)} of {length} frame bytes")
    return _parse(message_type, payload)


async def read_frame_async(reader: asyncio.StreamReader, message_type: type[M], max_bytes: int) -> M | None:
    """Reads one frame from an asyncio stream; None at a clean end of stream.

    Raises:
        FrameError: oversized, truncated or unparsable frame.
    """
    try:
        header = await reader.readexactly(_HEADER.size)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        raise FrameError("stream ended inside a frame header") from exc
    (length,) = _HEADER.unpack(header)
    if length > max_bytes:
        raise FrameError(f"frame of {length} bytes exceeds the limit of {max_bytes} bytes")
    try:
        payload = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise FrameError(f"stream ended after {len(exc.partial)} of {length} frame bytes") from exc
    return _parse(message_type, payload)


def _parse(message_type: type[M], payload: bytes) -> M:
    message = message_type()
    try:
        message.ParseFromString(payload)
    except Exception as exc:  # protobuf raises DecodeError, or RuntimeError on deep nesting
        raise FrameError(f"frame does not parse as {message_type.DESCRIPTOR.full_name}: {exc}") from exc
    return message
