"""The C12.22 ACSE APDU (ANSI C12.22-2008 §5.3.2.4, a subset of ISO 8650 ACSE), BER encoded.

    C12.22 message ::= [APPLICATION 0] IMPLICIT SEQUENCE {      -- tag 0x60
        aSO-context                  [1]  OBJECT IDENTIFIER OPTIONAL,
        called-AP-title              [2]  CHOICE { OID | [0] IMPLICIT RELATIVE-OID } OPTIONAL,
        called-AP-invocation-id      [4]  INTEGER OPTIONAL,
        calling-AP-title             [6]  CHOICE { OID | [0] IMPLICIT RELATIVE-OID } OPTIONAL,
        calling-AE-qualifier         [7]  INTEGER OPTIONAL,
        calling-AP-invocation-id     [8]  INTEGER,
        mechanism-name               [11] IMPLICIT OBJECT IDENTIFIER OPTIONAL,
        calling-authentication-value [12] [2] IMPLICIT SEQUENCE {
            [0] { [1] IMPLICIT SEQUENCE { key-id [0] OCTET STRING (SIZE 1),
                                          iv     [1] OCTET STRING (SIZE 4) } } } OPTIONAL,
        user-information             [30] EXTERNAL { [1] IMPLICIT OCTET STRING -- the EPSEM } }

AP titles are "absolute" universal OIDs or "relative" to the C12.22 root 2.16.124.113620.1.22
(C12.22 §5.3.2.4.2); the same title in either form names the same node.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from amistack.c1222 import ber
from amistack.c1222.errors import C1222DecodeError
from amistack.crypto.eax_prime import native_c1222_parse

# ANSI C12.22 §5.3.2.4.2: the root of all C12.22 ApTitles (relative titles hang below it).
C1222_ROOT: tuple[int, ...] = (2, 16, 124, 113620, 1, 22)
_ROOT_OID = ber.encode_oid(C1222_ROOT)
# C12.22 §5.3.2.4.11: mechanism-name of the C12.22 security mechanism (EAX').
C1222_MECHANISM: tuple[int, ...] = (2, 16, 124, 113620, 1, 22, 2, 1)

APDU_TAG = 0x60  # [APPLICATION 0] constructed
TAG_ASO_CONTEXT = 0xA1
TAG_CALLED_AP_TITLE = 0xA2
TAG_CALLED_AP_INVOCATION_ID = 0xA4
TAG_CALLING_AP_TITLE = 0xA6
TAG_CALLING_AE_QUALIFIER = 0xA7
TAG_CALLING_AP_INVOCATION_ID = 0xA8
TAG_MECHANISM_NAME = 0x8B
TAG_CALLING_AUTH_VALUE = 0xAC
TAG_USER_INFORMATION = 0xBE
TAG_OID = 0x06
TAG_RELATIVE_OID = 0x80  # [0] IMPLICIT RELATIVE-OID inside the AP title CHOICE
TAG_INTEGER = 0x02
TAG_EXTERNAL = 0x28
TAG_OCTET_ALIGNED = 0x81
TAG_AUTH_SEQUENCE = 0xA2
TAG_SINGLE_ASN1 = 0xA0
TAG_C1222_AUTH = 0xA1
TAG_KEY_ID = 0x80
TAG_IV = 0x81
IV_LEN = 4

_ORDER = (
    TAG_ASO_CONTEXT,
    TAG_CALLED_AP_TITLE,
    TAG_CALLED_AP_INVOCATION_ID,
    TAG_CALLING_AP_TITLE,
    TAG_CALLING_AE_QUALIFIER,
    TAG_CALLING_AP_INVOCATION_ID,
    TAG_MECHANISM_NAME,
    TAG_CALLING_AUTH_VALUE,
    TAG_USER_INFORMATION,
)


@dataclass(frozen=True)
class ApTitle:
    """A C12.22 ApTitle: OID arcs, absolute or relative to `C1222_ROOT`."""

    arcs: tuple[int, ...]
    relative: bool = False

    def __post_init__(self) -> None:
        if not self.arcs or any(a < 0 for a in self.arcs):
            raise ValueError(f"invalid ApTitle arcs {self.arcs}")
        if not self.relative:
            ber.encode_oid(self.arcs)  # validates the first two arcs

    @classmethod
    def parse(cls, text: str) -> ApTitle:
        """ "2.16.124.113620.1.22.0.7" (absolute) or ".0.7" (relative to the C12.22 root)."""
        relative = text.startswith(".")
        try:
            arcs = tuple(int(p) for p in text.lstrip(".").split("."))
        except ValueError:
            raise ValueError(f"not an ApTitle: {text!r}") from None
        return cls(arcs, relative)

    def absolute(self) -> ApTitle:
        return self._absolute

    @cached_property
    def _absolute(self) -> ApTitle:  # every message compares titles: build the form once
        if not self.relative:
            return self
        # below the (valid) root any non-negative arcs make an OID: no re-validation
        title = object.__new__(ApTitle)
        object.__setattr__(title, "arcs", C1222_ROOT + self.arcs)
        object.__setattr__(title, "relative", False)
        return title

    def __str__(self) -> str:
        return ("." if self.relative else "") + ".".join(map(str, self.arcs))

    @cached_property
    def device_id(self) -> bytes:
        """The key-lookup name of the node: its absolute title as dotted text."""
        return str(self.absolute()).encode()

    def same_node(self, other: ApTitle) -> bool:
        return self.device_id == other.device_id  # the absolute forms' dotted text, cached

    def encode_choice(self) -> bytes:
        """The CHOICE element: 06 <oid> or 80 <relative-oid>."""
        return self._choice

    @cached_property
    def _choice(self) -> bytes:  # titles repeat in every message: encode once per object
        if self.relative:
            return ber.tlv(TAG_RELATIVE_OID, ber.encode_relative_oid(self.arcs))
        return ber.tlv(TAG_OID, ber.encode_oid(self.arcs))

    def encode_canonical(self) -> bytes:
        """The absolute form's element, which the EAX' cleartext uses (C12.22 Annex I)."""
        return self._canonical

    @cached_property
    def called_elements(self) -> tuple[bytes, bytes]:
        """(called-AP-title element as sent, as the EAX' cleartext has it): built once per
        title, for `encode_header`."""
        return ber.tlv(TAG_CALLED_AP_TITLE, self._choice), ber.tlv(
            TAG_CALLED_AP_TITLE, self._canonical
        )

    @cached_property
    def calling_elements(self) -> tuple[bytes, bytes]:
        """(calling-AP-title element as sent, as the EAX' cleartext has it)."""
        return ber.tlv(TAG_CALLING_AP_TITLE, self._choice), ber.tlv(
            TAG_CALLING_AP_TITLE, self._canonical
        )

    @cached_property
    def _canonical(self) -> bytes:
        if not self.relative:
            return self._choice
        # X.690 §8.19: after the first two arcs each arc is encoded alone, so the absolute
        # form is the root's encoding followed by the relative arcs'
        return ber.tlv(TAG_OID, _ROOT_OID + ber.encode_relative_oid(self.arcs))

    @classmethod
    def _from_wire(cls, arcs: tuple[int, ...], relative: bool, choice: bytes) -> ApTitle:
        # Arcs from decode_oid / decode_relative_oid are valid by construction (first two arcs
        # from one subidentifier): skip __post_init__'s re-encoding; the wire bytes ARE the
        # (minimal, strictly decoded) encoding, so they fill the encode caches.
        title = object.__new__(cls)
        object.__setattr__(title, "arcs", arcs)
        object.__setattr__(title, "relative", relative)
        title.__dict__["_choice"] = choice
        if not relative:
            title.__dict__["_canonical"] = choice
        return title

    @classmethod
    def decode_choice(cls, data: bytes, offset: int, end: int) -> ApTitle:
        raw = data[offset:end]
        cached = _TITLES.get(raw)
        if cached is not None:
            return cached
        tag, start, stop = ber.read_tlv(data, offset, end)
        if stop != end:
            raise C1222DecodeError(stop, "trailing bytes after ApTitle")
        if tag == TAG_OID:
            title = cls._from_wire(ber.decode_oid(data[start:stop], start), False, raw)
        elif tag == TAG_RELATIVE_OID:
            title = cls._from_wire(ber.decode_relative_oid(data[start:stop], start), True, raw)
        else:
            raise C1222DecodeError(
                offset, f"ApTitle tag {tag:#04x} is neither OID nor relative OID"
            )
        if len(_TITLES) >= _TITLE_CACHE_SIZE:
            _TITLES.clear()  # a memo, not state: dropping it only costs re-decoding
        _TITLES[raw] = title
        return title


# AP titles recur in every message (the head-end's own, each meter's every half hour): decoded
# titles by their raw CHOICE bytes. Immutable values, so sharing them is safe.
_TITLE_CACHE_SIZE = 1 << 16
_TITLES: dict[bytes, ApTitle] = {}


@dataclass(frozen=True)
class AuthValue:
    """calling-authentication-value, C12.22 form: which key, and the per-message IV."""

    key_id: int
    iv: bytes

    def __post_init__(self) -> None:
        if not 0 <= self.key_id <= 0xFF:
            raise ValueError("C12.22 key id is one byte")
        if len(self.iv) != IV_LEN:
            raise ValueError(f"C12.22 IV is {IV_LEN} bytes")

    @classmethod
    def _from_wire(cls, key_id: int, iv: bytes) -> AuthValue:
        # a byte and a 4-byte slice: valid by construction, no __post_init__ checks needed
        value = object.__new__(cls)
        value.__dict__.update(key_id=key_id, iv=iv)  # frozen: not through __setattr__
        return value

    def encode(self) -> bytes:
        # a2 0d a0 0b a1 09 80 01 <key id> 81 04 <iv>: key id and IV have fixed sizes, so the
        # element is a fixed frame (the one `AcseMessage.decode` reads in place)
        return _AUTH_PREFIX + bytes((self.key_id,)) + _AUTH_IV_HEADER + self.iv

    @classmethod
    def decode(cls, data: bytes, offset: int, end: int) -> AuthValue:
        tag, start, stop = ber.read_tlv(data, offset, end)
        if tag != TAG_AUTH_SEQUENCE or stop != end:
            raise C1222DecodeError(offset, "calling-authentication-value is not [2] SEQUENCE")
        # Each wrapper must fill its container exactly: the element is authenticated as carried
        # (AcseMessage.canonical_cleartext), so bytes beyond it would go unauthenticated.
        outer = stop
        tag, start, stop = ber.read_tlv(data, start, outer)
        if tag != TAG_SINGLE_ASN1:
            raise C1222DecodeError(start, "only the single-ASN.1 authentication value is supported")
        if stop != outer:
            raise C1222DecodeError(stop, "trailing bytes in the authentication value")
        outer = stop
        tag, start, stop = ber.read_tlv(data, start, outer)
        if tag != TAG_C1222_AUTH:
            raise C1222DecodeError(start, "only the C12.22 authentication value is supported")
        if stop != outer:
            raise C1222DecodeError(stop, "trailing bytes in the authentication value")
        key_id: int | None = None
        iv: bytes | None = None
        pos = start
        while pos < stop:
            tag, vs, ve = ber.read_tlv(data, pos, stop)
            if tag == TAG_KEY_ID and key_id is None and iv is None:
                if ve - vs != 1:
                    raise C1222DecodeError(pos, "key-id element must be one byte")
                key_id = data[vs]
            elif tag == TAG_IV and iv is None:
                if ve - vs != IV_LEN:
                    raise C1222DecodeError(pos, f"iv element must be {IV_LEN} bytes")
                iv = data[vs:ve]
            else:
                raise C1222DecodeError(
                    pos, f"unexpected element {tag:#04x} in authentication value"
                )
            pos = ve
        if key_id is None or iv is None:
            raise C1222DecodeError(offset, "authentication value needs key-id and iv")
        return cls(key_id, iv)


@dataclass(frozen=True)
class AcseMessage:
    """One C12.22 message. `user_information` is the EPSEM octets as carried (flags first;
    encrypted body and MAC when protected) — see epsem.py and security.py."""

    user_information: bytes
    called_ap_title: ApTitle | None = None
    calling_ap_title: ApTitle | None = None
    calling_ap_invocation_id: int | None = None
    called_ap_invocation_id: int | None = None
    calling_ae_qualifier: int | None = None
    aso_context: tuple[int, ...] | None = None
    mechanism_name: tuple[int, ...] | None = None
    auth: AuthValue | None = None

    def with_user_information(self, user_information: bytes, auth: AuthValue | None) -> AcseMessage:
        """This message with another user-information and calling-authentication-value (what
        `c1222.security.protect` sets); `dataclasses.replace` spent more than the encoding."""
        return AcseMessage(
            user_information,
            called_ap_title=self.called_ap_title,
            calling_ap_title=self.calling_ap_title,
            calling_ap_invocation_id=self.calling_ap_invocation_id,
            called_ap_invocation_id=self.called_ap_invocation_id,
            calling_ae_qualifier=self.calling_ae_qualifier,
            aso_context=self.aso_context,
            mechanism_name=self.mechanism_name,
            auth=auth,
        )

    def _user_information_element(self) -> bytes:
        external = ber.tlv(TAG_EXTERNAL, ber.tlv(TAG_OCTET_ALIGNED, self.user_information))
        return ber.tlv(TAG_USER_INFORMATION, external)

    def encode(self) -> bytes:
        parts: list[bytes] = []
        if self.aso_context is not None:
            parts.append(
                ber.tlv(TAG_ASO_CONTEXT, ber.tlv(TAG_OID, ber.encode_oid(self.aso_context)))
            )
        if self.called_ap_title is not None:
            parts.append(ber.tlv(TAG_CALLED_AP_TITLE, self.called_ap_title.encode_choice()))
        if self.called_ap_invocation_id is not None:
            parts.append(_int_element(TAG_CALLED_AP_INVOCATION_ID, self.called_ap_invocation_id))
        if self.calling_ap_title is not None:
            parts.append(ber.tlv(TAG_CALLING_AP_TITLE, self.calling_ap_title.encode_choice()))
        if self.calling_ae_qualifier is not None:
            parts.append(_int_element(TAG_CALLING_AE_QUALIFIER, self.calling_ae_qualifier))
        if self.calling_ap_invocation_id is not None:
            parts.append(_int_element(TAG_CALLING_AP_INVOCATION_ID, self.calling_ap_invocation_id))
        if self.mechanism_name is not None:
            parts.append(ber.tlv(TAG_MECHANISM_NAME, ber.encode_oid(self.mechanism_name)))
        if self.auth is not None:
            parts.append(ber.tlv(TAG_CALLING_AUTH_VALUE, self.auth.encode()))
        parts.append(self._user_information_element())
        return ber.tlv(APDU_TAG, b"".join(parts))

    def canonical_cleartext(self) -> bytes:
        """The EAX' cleartext (C12.22 Annex I): called AP title, called AP invocation id,
        calling AE qualifier, calling AP invocation id, mechanism name, calling authentication
        value (each as its full element, AP titles in absolute form), the user-information
        element up to and including the EPSEM control byte, the calling AP title, then the raw
        key id and IV. Byte for byte what Wireshark's dissector builds whenever the three
        lengths of the user-information header take as many octets each (Wireshark takes
        `3 + 2 * (size of the outer length)` content octets, which otherwise reach into the
        encrypted EPSEM - a cleartext no sender can know before encrypting; docs/c1222.md).

        A decoded message carries it already, cut from the wire bytes (`decode`)."""
        cached: bytes | None = self.__dict__.get("_cleartext")
        if cached is not None:
            return cached
        out: list[bytes] = []
        if self.aso_context is not None:
            out.append(ber.tlv(TAG_ASO_CONTEXT, ber.tlv(TAG_OID, ber.encode_oid(self.aso_context))))
        if self.called_ap_title is not None:
            out.append(ber.tlv(TAG_CALLED_AP_TITLE, self.called_ap_title.encode_canonical()))
        if self.called_ap_invocation_id is not None:
            out.append(_int_element(TAG_CALLED_AP_INVOCATION_ID, self.called_ap_invocation_id))
        if self.calling_ae_qualifier is not None:
            out.append(_int_element(TAG_CALLING_AE_QUALIFIER, self.calling_ae_qualifier))
        if self.calling_ap_invocation_id is not None:
            out.append(_int_element(TAG_CALLING_AP_INVOCATION_ID, self.calling_ap_invocation_id))
        if self.mechanism_name is not None:
            out.append(ber.tlv(TAG_MECHANISM_NAME, ber.encode_oid(self.mechanism_name)))
        if self.auth is not None:
            out.append(ber.tlv(TAG_CALLING_AUTH_VALUE, self.auth.encode()))
        ui = self._user_information_element()
        _, external, _ = ber.read_tlv(ui, 0)
        _, octets, _ = ber.read_tlv(ui, external)
        _, epsem, _ = ber.read_tlv(ui, octets)
        out.append(ui[: epsem + 1])  # up to and including the EPSEM control byte
        if self.calling_ap_title is not None:
            out.append(ber.tlv(TAG_CALLING_AP_TITLE, self.calling_ap_title.encode_canonical()))
        if self.auth is not None:
            out.append(bytes([self.auth.key_id]) + self.auth.iv)
        return b"".join(out)

    @classmethod
    def decode(cls, data: bytes) -> AcseMessage:
        """The message in `data` (strict BER: C1222DecodeError with offset and reason)."""
        return _decode_common(data) or cls._decode(data)

    @classmethod
    def _decode(cls, data: bytes) -> AcseMessage:
        """Any element layout `_ORDER` allows; the reference for `_decode_common`."""
        tag, start, end = ber.read_tlv(data, 0)
        if tag != APDU_TAG:
            raise C1222DecodeError(0, f"not a C12.22 ACSE APDU (tag {tag:#04x})")
        if end != len(data):
            raise C1222DecodeError(end, "trailing bytes after the APDU")
        # One pass over the elements; spans[rank] = (element start, value start, value end).
        spans: list[tuple[int, int, int] | None] = [None] * len(_ORDER)
        pos = start
        last = -1
        while pos < end:
            tag = data[pos]
            at = pos + 1
            if tag & 0x1F != 0x1F and at < end and data[at] < 0x80:  # short form, inline
                vs = at + 1
                ve = vs + data[at]
                if ve > end:
                    raise C1222DecodeError(
                        pos, f"element of {data[at]} bytes overruns its container"
                    )
            else:
                tag, vs, ve = ber.read_tlv(data, pos, end)
            rank = _RANK.get(tag)
            if rank is None:
                raise C1222DecodeError(pos, f"unknown ACSE element {tag:#04x}")
            if rank <= last:
                raise C1222DecodeError(pos, f"ACSE element {tag:#04x} repeated or out of order")
            last = rank
            spans[rank] = (pos, vs, ve)
            pos = ve
        ui_span = spans[_UI]
        if ui_span is None:
            raise C1222DecodeError(end, "user-information (EPSEM) missing")

        aso = None
        span = spans[_ASO]
        if span is not None:
            _, vs, ve = span
            otag, s, e = ber.read_tlv(data, vs, ve)
            if otag != TAG_OID or e != ve:
                raise C1222DecodeError(vs, "aSO-context must be an OID")
            aso = ber.decode_oid(data[s:e], s)
        mech = None
        span = spans[_MECH]
        if span is not None:
            mech = ber.decode_oid(data[span[1] : span[2]], span[1])
        auth = None
        span = spans[_AUTH]
        if span is not None:
            _, vs, ve = span
            if (
                ve - vs == _AUTH_LEN
                and data[vs : vs + _AUTH_KEY] == _AUTH_PREFIX
                and data[vs + _AUTH_KEY + 1 : vs + _AUTH_IV] == _AUTH_IV_HEADER
            ):  # the one canonical layout: key id and IV read in place
                auth = AuthValue._from_wire(data[vs + _AUTH_KEY], data[vs + _AUTH_IV : ve])
            else:
                auth = AuthValue.decode(data, vs, ve)
        ui_pos, vs, ve = ui_span
        etag, s, e = ber.read_tlv(data, vs, ve)
        if etag != TAG_EXTERNAL or e != ve:
            raise C1222DecodeError(vs, "user-information must be one EXTERNAL")
        otag, s2, e2 = ber.read_tlv(data, s, e)
        if otag != TAG_OCTET_ALIGNED or e2 != e:
            raise C1222DecodeError(s, "EXTERNAL must carry one octet-aligned EPSEM")
        if e2 == s2:
            raise C1222DecodeError(s2, "empty EPSEM")
        called = calling = None
        called_span = spans[_CALLED]
        if called_span is not None:
            called = ApTitle.decode_choice(data, called_span[1], called_span[2])
        calling_span = spans[_CALLING]
        if calling_span is not None:
            calling = ApTitle.decode_choice(data, calling_span[1], calling_span[2])
        msg = cls(
            user_information=data[s2:e2],
            called_ap_title=called,
            calling_ap_title=calling,
            calling_ap_invocation_id=_integer(data, spans[_CALLING_INV]),
            called_ap_invocation_id=_integer(data, spans[_CALLED_INV]),
            calling_ae_qualifier=_integer(data, spans[_AE_QUALIFIER]),
            aso_context=aso,
            mechanism_name=mech,
            auth=auth,
        )
        # The EAX' cleartext from the wire bytes: strict decoding (minimal lengths, integers and
        # OID arcs; every element fills its container) makes each element's bytes exactly what
        # re-encoding it would give, so only a relative AP title needs building (absolute form).
        out: list[bytes] = []
        for rank in _CLEARTEXT_RANKS:
            span = spans[rank]
            if span is None:
                continue
            if rank == _CALLED and called is not None and called.relative:
                out.append(ber.tlv(TAG_CALLED_AP_TITLE, called.encode_canonical()))
            else:
                out.append(data[span[0] : span[2]])
        out.append(data[ui_pos : s2 + 1])  # as canonical_cleartext: to the EPSEM control byte
        if calling is not None and calling_span is not None:
            if calling.relative:
                out.append(ber.tlv(TAG_CALLING_AP_TITLE, calling.encode_canonical()))
            else:
                out.append(data[calling_span[0] : calling_span[2]])
        if auth is not None:
            out.append(bytes([auth.key_id]) + auth.iv)
        msg.__dict__["_cleartext"] = b"".join(out)
        return msg


# A received message's fields (`decode_fields`): (called AP title, calling AP title, calling
# AP invocation id, called AP invocation id, calling AE qualifier, key id and IV (None: no
# calling-authentication-value), the EPSEM as carried, the EAX' cleartext).
Fields = tuple[
    ApTitle | None,
    ApTitle | None,
    int | None,
    int | None,
    int | None,
    int | None,
    bytes | None,
    bytes,
    bytes,
]


def decode_fields(data: bytes) -> Fields:
    """The fields of the message in `data`, as `AcseMessage.decode` would give them (and its
    errors). An endpoint reads every message it receives this way: on the layout every endpoint
    sends (`encode_header`) no message object is built, the fields come from one C call."""
    fields = _common_fields(data)
    if fields is not None:
        return fields
    msg = AcseMessage._decode(data)
    auth = msg.auth
    return (
        msg.called_ap_title,
        msg.calling_ap_title,
        msg.calling_ap_invocation_id,
        msg.called_ap_invocation_id,
        msg.calling_ae_qualifier,
        None if auth is None else auth.key_id,
        None if auth is None else auth.iv,
        msg.user_information,
        msg.canonical_cleartext(),  # cut from the wire by `_decode`: no work
    )


def _decode_common(data: bytes) -> AcseMessage | None:
    """The message of the common layout (`_common_fields`), else None."""
    fields = _common_fields(data)
    return None if fields is None else _common_message(*fields)


def _common_fields(
    data: bytes,
) -> tuple[ApTitle, ApTitle, int, int | None, int | None, int, bytes, bytes, bytes] | None:
    """`_common_fields_py`, the layout read in C when the extension is built (the same
    fields and cleartext, tested on arbitrary inputs)."""
    if native_c1222_parse is None:
        return _common_fields_py(data)
    fields = native_c1222_parse(data)
    if fields is None:
        return None
    called_raw, called_inv, calling_raw, qualifier, inv, key_id, iv, middle, tail, ui = fields
    called = _TITLES.get(called_raw)
    calling = _TITLES.get(calling_raw)
    if called is None or calling is None:
        return None
    return (
        called,
        calling,
        inv,
        called_inv,
        qualifier,
        key_id,
        iv,
        data[ui:],
        called.called_elements[1] + middle + calling.calling_elements[1] + tail,
    )


def _common_message(
    called: ApTitle | None,
    calling: ApTitle | None,
    inv: int | None,
    called_inv: int | None,
    qualifier: int | None,
    key_id: int | None,
    iv: bytes | None,
    user_information: bytes,
    cleartext: bytes,
) -> AcseMessage:
    """The message of the common layout's fields: what `__init__` checks holds by
    construction."""
    assert key_id is not None and iv is not None  # the common layout always has them
    msg = object.__new__(AcseMessage)
    msg.__dict__.update(
        user_information=user_information,
        called_ap_title=called,
        calling_ap_title=calling,
        calling_ap_invocation_id=inv,
        called_ap_invocation_id=called_inv,
        calling_ae_qualifier=qualifier,
        aso_context=None,
        mechanism_name=None,
        auth=AuthValue._from_wire(key_id, iv),
        _cleartext=cleartext,
    )
    return msg


def _decode_common_py(data: bytes) -> AcseMessage | None:
    """The message of `_common_fields_py` (the reference the C reader is tested against)."""
    fields = _common_fields_py(data)
    return None if fields is None else _common_message(*fields)


def _common_fields_py(
    data: bytes,
) -> tuple[ApTitle, ApTitle, int, int | None, int | None, int, bytes, bytes, bytes] | None:
    """The layout every endpoint sends (`encode_header`), read in one pass, else None (the
    general decoder then decides, errors included): short-form lengths throughout, called
    AP title, [called invocation id], calling AP title, [AE qualifier], calling invocation id,
    the canonical calling-authentication-value and one octet-aligned EPSEM; AP titles
    already in the title cache (a sender's first message goes the general way and fills it).
    The fields and the EAX' cleartext are what `AcseMessage._decode` gives (tested)."""
    end = len(data)
    # a short-form APDU length (below 0x80: 0x80 is BER's indefinite form, above it the long
    # form) bounds every nested length below 0x80 too
    if not 4 <= end < 0x82 or data[0] != APDU_TAG or data[1] != end - 2:
        return None
    if data[2] != TAG_CALLED_AP_TITLE:
        return None
    ve = 4 + data[3]
    if data[3] >= 0x80 or ve > end:
        return None
    called = _TITLES.get(data[4:ve])
    if called is None or (opt := _optional_int(data, ve, end, TAG_CALLED_AP_INVOCATION_ID)) is None:
        return None
    called_inv, called_inv_element, pos = opt
    if pos + 2 > end or data[pos] != TAG_CALLING_AP_TITLE or data[pos + 1] >= 0x80:
        return None
    ve = pos + 2 + data[pos + 1]
    calling = _TITLES.get(data[pos + 2 : ve]) if ve <= end else None
    if calling is None or (opt := _optional_int(data, ve, end, TAG_CALLING_AE_QUALIFIER)) is None:
        return None
    qualifier, qualifier_element, pos = opt
    if pos >= end or data[pos] != TAG_CALLING_AP_INVOCATION_ID:
        return None
    inv, ve = _int_at(data, pos, end)
    if inv is None:
        return None
    inv_element = data[pos:ve]
    pos = ve
    # calling-authentication-value: ac 0f + the canonical frame, key id and IV in place
    auth_end = pos + 2 + _AUTH_LEN
    if (
        auth_end + 7 > end
        or data[pos : pos + 2 + _AUTH_KEY] != _AUTH_ELEMENT
        or data[pos + 3 + _AUTH_KEY : pos + 2 + _AUTH_IV] != _AUTH_IV_HEADER
    ):
        return None
    auth_element = data[pos:auth_end]
    key_id = data[pos + 2 + _AUTH_KEY]
    iv = data[pos + 2 + _AUTH_IV : auth_end]
    pos = auth_end
    # user-information: be L 28 L 81 L <epsem>, filling the APDU
    n = data[pos + 5] if pos + 5 < end else 0x80
    if (
        data[pos] != TAG_USER_INFORMATION
        or data[pos + 2] != TAG_EXTERNAL
        or data[pos + 4] != TAG_OCTET_ALIGNED
        or not 0 < n < 0x80
        or data[pos + 3] != n + 2
        or data[pos + 1] != n + 4
        or pos + 6 + n != end
    ):
        return None
    cleartext = b"".join(
        (
            called.called_elements[1],
            called_inv_element,
            qualifier_element,
            inv_element,
            auth_element,
            data[pos : pos + 7],
            calling.calling_elements[1],
            bytes((key_id,)),
            iv,
        )
    )
    return called, calling, inv, called_inv, qualifier, key_id, iv, data[pos + 6 :], cleartext


def _optional_int(
    data: bytes, pos: int, end: int, tag: int
) -> tuple[int | None, bytes, int] | None:
    """(the optional INTEGER element `tag` at `pos`: its value or None when absent, its octets,
    the position after it), or None when it is there but not in the common form."""
    if pos >= end or data[pos] != tag:
        return None, b"", pos
    value, ve = _int_at(data, pos, end)
    return None if value is None else (value, data[pos:ve], ve)


def _int_at(data: bytes, pos: int, end: int) -> tuple[int | None, int]:
    """(the INTEGER of the element at `pos` in short form and minimal, or None; its end)."""
    if pos + 4 > end:
        return None, pos
    n = data[pos + 3]
    ve = pos + 4 + n
    if (
        data[pos + 1] != n + 2
        or data[pos + 2] != TAG_INTEGER
        or not 0 < n <= 9
        or ve > end
        or data[pos + 4] & 0x80
        or (n > 1 and data[pos + 4] == 0 and not data[pos + 5] & 0x80)
    ):
        return None, pos
    return int.from_bytes(data[pos + 4 : ve], "big"), ve


def encode_header(
    called: ApTitle,
    calling: ApTitle,
    calling_invocation_id: int,
    control: int,
    epsem_len: int,
    *,
    called_invocation_id: int | None = None,
    calling_ae_qualifier: int | None = None,
    auth: tuple[int, bytes] | None = None,
) -> tuple[bytes, bytes]:
    """One pass over what an endpoint sends: (the APDU up to and including the EPSEM control
    byte, the EAX' cleartext - empty without `auth`). `epsem_len` counts the EPSEM octets as
    carried (control byte, body, MAC); the caller appends all but the control byte.

    Byte for byte `AcseMessage(...).encode()` and `canonical_cleartext()` of `protect`'s
    message (tests/unit/c1222/test_codec.py checks both on arbitrary headers), with the AP
    titles' elements built once per title and no intermediate message objects."""
    inv = _int_element(TAG_CALLING_AP_INVOCATION_ID, calling_invocation_id)
    called_inv = (
        b""
        if called_invocation_id is None
        else _int_element(TAG_CALLED_AP_INVOCATION_ID, called_invocation_id)
    )
    qualifier = (
        b""
        if calling_ae_qualifier is None
        else _int_element(TAG_CALLING_AE_QUALIFIER, calling_ae_qualifier)
    )
    auth_element = (
        b"" if auth is None else _AUTH_ELEMENT + bytes((auth[0],)) + _AUTH_IV_HEADER + auth[1]
    )
    # user-information: be L [ 28 L [ 81 L <epsem> ] ]
    n = epsem_len
    inner = 2 + n if n < 0x80 else 1 + len(ber.encode_length(n)) + n
    if inner < 0x7E:  # the element's length (inner + 2) short too
        ui_head = bytes(
            (TAG_USER_INFORMATION, inner + 2, TAG_EXTERNAL, inner, TAG_OCTET_ALIGNED, n)
        )
    else:
        outer = 1 + len(ber.encode_length(inner)) + inner
        ui_head = (
            bytes((TAG_USER_INFORMATION,))
            + ber.encode_length(outer)
            + bytes((TAG_EXTERNAL,))
            + ber.encode_length(inner)
            + bytes((TAG_OCTET_ALIGNED,))
            + ber.encode_length(n)
        )
    called_wire, called_clear = called.called_elements
    calling_wire, calling_clear = calling.calling_elements
    body = b"".join(
        (called_wire, called_inv, calling_wire, qualifier, inv, auth_element, ui_head)
    ) + bytes((control,))
    size = len(body) + n - 1
    if size < 0x80:
        head = bytes((APDU_TAG, size)) + body
    else:
        head = bytes((APDU_TAG,)) + ber.encode_length(size) + body
    if auth is None:
        return head, b""
    clear = b"".join(
        (
            called_clear,
            called_inv,
            qualifier,
            inv,
            auth_element,
            ui_head,  # as canonical_cleartext: up to and including the EPSEM control byte
            bytes((control,)),
            calling_clear,
            bytes((auth[0],)),
            auth[1],
        )
    )
    return head, clear


def _integer(data: bytes, span: tuple[int, int, int] | None) -> int | None:
    """The INTEGER filling the element at `span` (None: element absent)."""
    if span is None:
        return None
    _, vs, ve = span
    if ve - vs >= 2 and data[vs] == TAG_INTEGER and data[vs + 1] == ve - vs - 2 < 0x80:
        return ber.decode_uint(data[vs + 2 : ve], vs + 2)
    itag, s, e = ber.read_tlv(data, vs, ve)
    if itag != TAG_INTEGER or e != ve:
        raise C1222DecodeError(vs, "expected an INTEGER")
    return ber.decode_uint(data[s:e], s)


_RANK = {tag: rank for rank, tag in enumerate(_ORDER)}
_ASO, _CALLED, _CALLED_INV, _CALLING, _AE_QUALIFIER, _CALLING_INV, _MECH, _AUTH, _UI = range(9)
# The elements the EAX' cleartext starts with, in order (C12.22 Annex I; canonical_cleartext).
_CLEARTEXT_RANKS = (_ASO, _CALLED, _CALLED_INV, _AE_QUALIFIER, _CALLING_INV, _MECH, _AUTH)
# calling-authentication-value content as AuthValue.encode() writes it: a2 0d a0 0b a1 09
# 80 01 <key id> 81 04 <iv>
_AUTH_PREFIX = bytes([TAG_AUTH_SEQUENCE, 13, TAG_SINGLE_ASN1, 11, TAG_C1222_AUTH, 9, TAG_KEY_ID, 1])
_AUTH_KEY = len(_AUTH_PREFIX)
_AUTH_IV_HEADER = bytes([TAG_IV, IV_LEN])
_AUTH_ELEMENT = bytes([TAG_CALLING_AUTH_VALUE, 15]) + _AUTH_PREFIX  # ac 0f + the frame
_AUTH_IV = _AUTH_KEY + 1 + len(_AUTH_IV_HEADER)
_AUTH_LEN = _AUTH_IV + IV_LEN


def _int_element(tag: int, value: int) -> bytes:
    v = ber.encode_uint(value)  # at most 9 octets (ids are 32-bit): short forms throughout
    n = len(v)
    if n < 0x7E:
        return bytes((tag, n + 2, TAG_INTEGER, n)) + v
    return ber.tlv(tag, ber.tlv(TAG_INTEGER, v))
