"""The entropy protocol on the wire, without any generated class: field 1 in, field 1 out.

The probe must work against any compatible server, whatever its ``.proto`` calls things, and must
say precisely what is wrong with an incompatible one. So it encodes the request itself (field 1 =
the byte count as a varint; field 2 = a sequence id on bidi streams) and reads the reply field by
field: the bytes are the length-delimited field 1, a sequence id is a varint field 2; any other
field is skipped by its wire type, as protobuf parsers do.
"""

from __future__ import annotations

from dataclasses import dataclass

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


def encode_varint(value: int) -> bytes:
    """Protobuf base-128 varint of a non-negative integer."""
    if value < 0:
        raise ValueError("only non-negative values are encoded here")
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def encode_request(n: int, sequence_id: int = 0) -> bytes:
    """A request for ``n`` bytes: field 1 varint, plus field 2 varint when a sequence id is set.

    Unary and server-streaming requests carry only field 1 (sequence id 0 is not written), so a
    server whose request declares something else at field 2 is not confused by it.
    """
    message = b"\x08" + encode_varint(n)
    if sequence_id:
        message += b"\x10" + encode_varint(sequence_id)
    return message


@dataclass(frozen=True)
class DecodedReply:
    """What a reply carried: its bytes (None if field 1 was absent), its sequence id, and why it
    could not be read (``problem``, '' when it could)."""

    data: bytes | None
    sequence_id: int = 0
    problem: str = ""


def decode_reply(message: bytes) -> DecodedReply:
    """Read field 1 (bytes) and field 2 (varint) of a reply; skip every other field."""
    data: bytes | None = None
    sequence_id = 0
    pos = 0
    try:
        while pos < len(message):
            tag, pos = _read_varint(message, pos)
            number, wire_type = tag >> 3, tag & 7
            if wire_type == _VARINT:
                value, pos = _read_varint(message, pos)
                if number == 1:
                    return DecodedReply(None, problem="reply field 1 is a varint, not bytes")
                if number == 2:
                    sequence_id = value
            elif wire_type == _LEN:
                length, pos = _read_varint(message, pos)
                if pos + length > len(message):
                    raise ValueError("a length-delimited field runs past the end")
                if number == 1:
                    data = message[pos:pos + length]  # the last occurrence wins, as in protobuf
                pos += length
            elif wire_type in (_I64, _I32):
                if number == 1:
                    return DecodedReply(None, problem="reply field 1 is a fixed-width number, "
                                                      "not bytes")
                pos += 8 if wire_type == _I64 else 4
                if pos > len(message):
                    raise ValueError("a fixed-width field runs past the end")
            else:
                raise ValueError(f"unsupported wire type {wire_type}")
    except ValueError as exc:
        return DecodedReply(None, problem=f"the reply is not a valid protobuf message ({exc})")
    if data is None and message:
        return DecodedReply(None, sequence_id, "the reply has no field 1 (bytes)")
    return DecodedReply(data if data is not None else b"", sequence_id)


def _read_varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    for _ in range(10):  # a 64-bit varint has at most 10 bytes
        if pos >= len(buf):
            raise ValueError("truncated varint")
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return result, pos
        shift += 7
    raise ValueError("varint longer than 10 bytes")
