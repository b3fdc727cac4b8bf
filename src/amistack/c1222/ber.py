"""The BER subset C12.22 ACSE uses (ITU-T X.690): one-byte tags, definite lengths, OIDs,
relative OIDs and non-negative INTEGERs.

Decoding is strict (minimal lengths and integers, like DER) so that a decoded APDU re-encodes to
the same bytes: the EAX' cleartext is rebuilt from the decoded fields (security.py), and a
non-minimal encoding could otherwise authenticate differently on each side.
"""

from __future__ import annotations

from amistack.c1222.errors import C1222DecodeError

MAX_LENGTH = 0xFFFFFF  # C12.22 messages are far below 16 MiB; longer lengths are refused


def encode_length(n: int) -> bytes:
    """X.690 §8.1.3: short form below 128, else long form with the fewest bytes."""
    if n < 0x80:
        return bytes([n])
    body = n.to_bytes((n.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(body)]) + body


def tlv(tag: int, value: bytes) -> bytes:
    n = len(value)
    if n < 0x80:  # short form, the common case: no call
        return bytes((tag, n)) + value
    return bytes([tag]) + encode_length(n) + value


def read_length(data: bytes, offset: int, limit: int | None = None) -> tuple[int, int]:
    """(length, offset of the value); the length octets must lie before `limit` (default: the
    end of `data`)."""
    stop = len(data) if limit is None else limit
    if offset >= stop:
        raise C1222DecodeError(offset, "length missing")
    first = data[offset]
    if first < 0x80:
        return first, offset + 1
    n = first & 0x7F
    if n == 0:
        raise C1222DecodeError(offset, "indefinite length not allowed")
    if n > 3:
        raise C1222DecodeError(offset, f"length of {n} bytes too long")
    if offset + 1 + n > stop:
        raise C1222DecodeError(offset, "length truncated")
    value = int.from_bytes(data[offset + 1 : offset + 1 + n], "big")
    if value < 0x80 or data[offset + 1] == 0:
        raise C1222DecodeError(offset, "non-minimal length")
    return value, offset + 1 + n


def read_tlv(data: bytes, offset: int, end: int | None = None) -> tuple[int, int, int]:
    """(tag, value start, value end) of the TLV at `offset`, which must fit before `end`."""
    limit = len(data) if end is None else end
    if offset >= limit:
        raise C1222DecodeError(offset, "element missing")
    tag = data[offset]
    if tag & 0x1F == 0x1F:
        raise C1222DecodeError(offset, "multi-byte tags are not used by C12.22")
    at = offset + 1
    if at < limit and data[at] < 0x80:  # short form, the common case: no call, no slice
        length, start = data[at], at + 1
    else:
        length, start = read_length(data, at, limit)
    if start + length > limit:
        raise C1222DecodeError(offset, f"element of {length} bytes overruns its container")
    return tag, start, start + length


def encode_uint(value: int) -> bytes:
    """A non-negative INTEGER's content octets (X.690 §8.3), minimal two's complement."""
    if value < 0:
        raise ValueError("only non-negative integers are used")
    return value.to_bytes(value.bit_length() // 8 + 1, "big")


def decode_uint(value: bytes, offset: int) -> int:
    if not value:
        raise C1222DecodeError(offset, "empty INTEGER")
    if value[0] & 0x80:
        raise C1222DecodeError(offset, "negative INTEGER")
    if len(value) > 1 and value[0] == 0 and not value[1] & 0x80:
        raise C1222DecodeError(offset, "non-minimal INTEGER")
    if len(value) > 9:
        raise C1222DecodeError(offset, "INTEGER too large")
    return int.from_bytes(value, "big")


def _encode_arc(arc: int) -> bytes:
    out = [arc & 0x7F]
    arc >>= 7
    while arc:
        out.append(0x80 | (arc & 0x7F))
        arc >>= 7
    return bytes(reversed(out))


def encode_relative_oid(arcs: tuple[int, ...]) -> bytes:
    """X.690 §8.20: each arc base-128, high bit on all but the last byte."""
    return b"".join(_encode_arc(a) for a in arcs)


def encode_oid(arcs: tuple[int, ...]) -> bytes:
    """X.690 §8.19: the first two arcs share one subidentifier (40 * a0 + a1)."""
    if len(arcs) < 2 or arcs[0] > 2 or (arcs[0] < 2 and arcs[1] > 39):
        raise ValueError(f"not an object identifier: {arcs}")
    return _encode_arc(arcs[0] * 40 + arcs[1]) + encode_relative_oid(arcs[2:])


def decode_relative_oid(value: bytes, offset: int) -> tuple[int, ...]:
    # Well-formed arcs (the norm) in a lean loop; anything odd goes to the checking decoder,
    # which finds the first fault and its offset.
    if value and not value[-1] & 0x80:
        arcs: list[int] = []
        acc = 0
        for byte in value:
            if byte & 0x80:
                if byte == 0x80 and not acc:
                    break  # non-minimal arc
                acc = (acc << 7) | (byte & 0x7F)
            else:
                arcs.append((acc << 7) | byte)
                acc = 0
        else:
            if max(arcs) >> 64 == 0:
                return tuple(arcs)
    return _decode_relative_oid_checked(value, offset)


def _decode_relative_oid_checked(value: bytes, offset: int) -> tuple[int, ...]:
    if not value:
        raise C1222DecodeError(offset, "empty object identifier")
    arcs: list[int] = []
    acc = 0
    started = False
    for i, byte in enumerate(value):
        if not started and byte == 0x80:
            raise C1222DecodeError(offset + i, "non-minimal OID arc")
        started = True
        acc = (acc << 7) | (byte & 0x7F)
        if acc.bit_length() > 64:
            raise C1222DecodeError(offset + i, "OID arc too large")
        if not byte & 0x80:
            arcs.append(acc)
            acc = 0
            started = False
    if started:
        raise C1222DecodeError(offset + len(value) - 1, "OID arc truncated")
    return tuple(arcs)


def decode_oid(value: bytes, offset: int) -> tuple[int, ...]:
    arcs = decode_relative_oid(value, offset)
    first = arcs[0]
    head = (first // 40, first % 40) if first < 80 else (2, first - 80)
    return head + arcs[1:]
