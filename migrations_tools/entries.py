"""Unwrapping one stored cache value into the history it holds, whatever wrote it.

What a store holds for ``Rails.cache.write(user_id, history)``, told apart by the first
bytes (no store records which release wrote a value):

====================  ===========================================================
``00 11 ...``         Rails 7.1 ``Cache::Coder``: type byte (0x01 Marshal object,
                      0x02-0x04 a raw string, +0x80 zlib), expires_at (float64 LE,
                      -1 none), version length (int32 LE, -1 none), version, payload
``00 04 08 ...``      Rails 7.0 coder, uncompressed: ``Marshal.dump(entry.pack)``,
                      ``[value, expires_at, version]`` with trailing nils dropped
``01 78 ...``         Rails 7.0 coder, zlib-compressed ``entry.pack``
``04 08 o: Entry``    ``ActiveSupport::Cache::Entry``: Rails 3.0/3.1 (the value itself,
                      or deflated Marshal when ``@compressed``), 3.2 (the value
                      marshalled again inside ``@value``), 4.0-5.1 and 5.2-7.0 (with
                      ``@version``)
``04 08 ...``         a bare ``Marshal.dump`` of the history (dalli 2.x, app code
                      writing Redis directly)
``78 ...``            dalli 2.x with compression: zlib of a bare ``Marshal.dump``
====================  ===========================================================
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from typing import Any

from .errors import Corrupt, NotAHistory, Truncated, UnknownRubyClass
from .marshal import Decoded, RubyEntry, loads, plain

RAILS71_SIGNATURE = b"\x00\x11"
_RAILS71_HEADER = struct.Struct("<Bdl")
_ZLIB_FIRST_BYTE = 0x78
#: Largest inflated value accepted (a legacy chat history is kilobytes; a zlib bomb
#: must not take the importer's memory).
MAX_INFLATED = 64 * 1024 * 1024


@dataclass
class Unwrapped:
    """The value a cache entry holds, as plain JSON-ready Python."""

    value: Any
    #: ``rails30-entry``, ``rails32-entry``, ``rails3-entry`` (a compressed 3.0-3.2
    #: entry: the two are byte-identical), ``rails40-entry``, ``rails61-entry``,
    #: ``rails70-coder``, ``rails71-coder``, ``dalli2-zlib`` or ``plain-marshal``.
    format: str
    #: Entry metadata (class, created_at, expires_in, compressed, version for entries;
    #: expires_at, version, compressed for the 7.x coders), or None for bare values.
    entry: dict[str, Any] | None
    #: Strings whose invalid bytes were replaced with U+FFFD.
    replaced: int = 0


def inflate(data: bytes) -> bytes:
    try:
        inflater = zlib.decompressobj()
        out = inflater.decompress(data, MAX_INFLATED)
        if inflater.unconsumed_tail:
            raise Corrupt(f"inflates to more than {MAX_INFLATED} bytes")
        if not inflater.eof:
            raise Truncated("compressed value ends in the middle")
        return out
    except zlib.error as exc:
        raise Corrupt(f"bad compressed data ({exc})") from None


def unwrap(raw: bytes) -> Unwrapped:
    """Decode one stored value; raises a :class:`~.errors.Skip` subclass."""
    if len(raw) < 2:
        raise Truncated(f"a {len(raw)}-byte value")
    if raw.startswith(RAILS71_SIGNATURE):
        return _rails71(raw)
    if raw[:1] == b"\x00" and raw[1:3] == b"\x04\x08":
        return _rails70(raw[1:], compressed=False)
    if raw[:1] == b"\x01" and raw[1:2] == bytes([_ZLIB_FIRST_BYTE]):
        return _rails70(inflate(raw[1:]), compressed=True)
    if raw[:2] == b"\x04\x08":
        decoded = loads(raw)
        if isinstance(decoded.value, RubyEntry):
            return _entry(decoded.value, decoded)
        return _bare(decoded, "plain-marshal")
    if raw[:1] == bytes([_ZLIB_FIRST_BYTE]):
        return _bare(loads(inflate(raw)), "dalli2-zlib")
    raise Corrupt(f"not a Rails cache value (starts {raw[:4].hex()})")


def _bare(decoded: Decoded, format: str) -> Unwrapped:
    value = plain(decoded.value, decoded)
    return Unwrapped(value, format, None, decoded.replaced)


def _inner(data: Any, compressed: bool, decoded: Decoded) -> Any:
    """A value marshalled again (and maybe deflated) inside an entry."""
    if not isinstance(data, bytes):
        raise NotAHistory("entry's @value is not a binary string")
    inner = loads(inflate(data) if compressed else data)
    decoded.replaced += inner.replaced
    if isinstance(inner.value, RubyEntry):
        raise UnknownRubyClass(inner.value.class_name, "an entry inside an entry")
    return inner.value


def _entry(entry: RubyEntry, decoded: Decoded) -> Unwrapped:
    ivars = entry.ivars
    if "@value" not in ivars:
        raise NotAHistory(f"{entry.class_name} without @value")
    names = list(ivars)
    compressed = ivars.get("@compressed") is True
    value = ivars["@value"]
    if "@version" in ivars:
        format = "rails61-entry"
    elif names[0] == "@compressed":  # 3.0-3.2 set @compressed first
        if compressed:
            format = "rails3-entry"
        elif isinstance(value, bytes) and value.startswith(b"\x04\x08"):
            format = "rails32-entry"
            value = _inner(value, False, decoded)
        else:
            format = "rails30-entry"
    else:
        format = "rails40-entry"
    if compressed:
        value = _inner(value, True, decoded)
    meta = {
        "class": entry.class_name,
        "created_at": _number(ivars.get("@created_at")),
        "expires_in": _number(ivars.get("@expires_in")),
        "compressed": compressed,
        "version": _text(ivars.get("@version"), decoded),
    }
    result = plain(value, decoded)
    return Unwrapped(result, format, meta, decoded.replaced)


def _rails70(payload: bytes, compressed: bool) -> Unwrapped:
    decoded = loads(payload)
    packed = decoded.value
    if not isinstance(packed, list) or not 1 <= len(packed) <= 3:
        raise NotAHistory("Rails 7.0 coder payload is not [value, expires_at, version]")
    value, expires_at, version = [*packed, None, None][:3]
    if isinstance(value, RubyEntry):
        raise UnknownRubyClass(value.class_name, "an entry inside a Rails 7.0 value")
    meta = {
        "expires_at": _number(expires_at),
        "version": _text(version, decoded),
        "compressed": compressed,
    }
    return Unwrapped(plain(value, decoded), "rails70-coder", meta, decoded.replaced)


def _rails71(raw: bytes) -> Unwrapped:
    start = len(RAILS71_SIGNATURE)
    end = start + _RAILS71_HEADER.size
    if len(raw) < end:
        raise Truncated("Rails 7.1 header ends in the middle")
    type_, expires_at, version_length = _RAILS71_HEADER.unpack(raw[start:end])
    version: str | None = None
    if version_length >= 0:
        blob = raw[end : end + version_length]
        if len(blob) != version_length:
            raise Truncated("Rails 7.1 version ends in the middle")
        end += version_length
        if blob.startswith(b"\x04\x08"):  # a non-UTF-8 version is marshalled
            version = _text(plain(loads(blob).value, Decoded(None)), Decoded(None))
        else:
            version = blob.decode("utf-8", "replace")
    payload = raw[end:]
    compressed = bool(type_ & 0x80)
    if compressed:
        payload = inflate(payload)
    kind = type_ & 0x7F
    if kind != 0x01:
        if kind in (0x02, 0x03, 0x04):
            raise NotAHistory("a String (Rails 7.1 raw string value)")
        raise Corrupt(f"unknown Rails 7.1 value type {type_:#x}")
    decoded = loads(payload)
    if isinstance(decoded.value, RubyEntry):
        raise UnknownRubyClass(decoded.value.class_name, "an entry inside a Rails 7.1 value")
    meta = {
        "expires_at": None if expires_at == -1.0 else expires_at,
        "version": version,
        "compressed": compressed,
    }
    return Unwrapped(plain(decoded.value, decoded), "rails71-coder", meta, decoded.replaced)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value)


def _text(value: Any, decoded: Decoded) -> str | None:
    if value is None:
        return None
    text = plain(value, decoded)
    return text if isinstance(text, str) else str(text)
