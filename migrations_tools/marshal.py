"""Reading Ruby ``Marshal.dump`` bytes safely: rubymarshal's reader, extended.

rubymarshal (PyPI) reads the format's scalars, arrays, hashes, floats, bignums,
symbols and symbol links well; :class:`SafeReader` keeps those and replaces what a
legacy Rails chat cache needs and rubymarshal gets wrong or refuses:

- **No construction from the data.** rubymarshal makes a Python object for any class
  name in the stream; here only an allow-list is read (Hash, Array, String, Symbol,
  nil, true/false, Integer, Float, ``HashWithIndifferentAccess``, ``OrderedHash``,
  ``SafeBuffer``, ``ActiveSupport::Cache::Entry``). Any other class, ``_dump`` /
  ``marshal_dump`` data, Struct, module, class or regexp raises
  :class:`~.errors.UnknownRubyClass` before anything of it is read.
- **User subclasses** (``C``: ``HashWithIndifferentAccess``, ``SafeBuffer``) and
  **hashes with a default value** (``}``) are read; rubymarshal raises on both.
- **Strings are decoded by their encoding** with invalid bytes replaced by U+FFFD and
  counted (:attr:`SafeReader.replaced`), and so is U+0000 (SQL text refuses it);
  rubymarshal falls back to ``unicode-escape``, which silently turns invalid UTF-8 into
  mojibake. Strings with no encoding
  (ASCII-8BIT, everything Ruby 1.8 wrote) stay ``bytes`` here: a Rails 3.2 entry keeps
  the marshalled history in one, and :func:`plain` reads the rest as UTF-8.
- **Truncation is an error**: rubymarshal returns short strings from a cut-off value.
- Object links (``@``) are followed, to the same Python object, as Ruby shares them;
  a link to an object still being read (a cycle) is refused.

Symbols come back as :class:`RubySymbol` (a ``str``), so ``:type`` and ``"type"`` are
the same key, as they are through ``HashWithIndifferentAccess``.
"""

from __future__ import annotations

import codecs
import io
import struct
from dataclasses import dataclass, field
from typing import Any

from rubymarshal.constants import (
    TYPE_ARRAY,
    TYPE_BIGNUM,
    TYPE_CLASS,
    TYPE_DATA,
    TYPE_EXTENDED,
    TYPE_FALSE,
    TYPE_FIXNUM,
    TYPE_FLOAT,
    TYPE_HASH,
    TYPE_HASH_DEF,
    TYPE_IVAR,
    TYPE_LINK,
    TYPE_MODULE,
    TYPE_MODULE_OLD,
    TYPE_NIL,
    TYPE_OBJECT,
    TYPE_REGEXP,
    TYPE_STRING,
    TYPE_STRUCT,
    TYPE_SYMBOL,
    TYPE_SYMLINK,
    TYPE_TRUE,
    TYPE_UCLASS,
    TYPE_USERDEF,
    TYPE_USRMARSHAL,
)
from rubymarshal.reader import Reader

from .errors import Corrupt, Skip, Truncated, UnknownRubyClass

#: Subclasses of Hash and String that a Rails chat cache holds, read as dict and str.
HASH_CLASSES = frozenset(
    {
        "ActiveSupport::HashWithIndifferentAccess",
        "HashWithIndifferentAccess",  # Rails 2.x named it at the top level
        "ActiveSupport::OrderedHash",
    }
)
STRING_CLASSES = frozenset({"ActiveSupport::SafeBuffer", "ActionView::SafeBuffer"})
#: Objects (``o``) that may appear: only the cache entry wrapper.
OBJECT_CLASSES = frozenset({"ActiveSupport::Cache::Entry"})

#: Tokens rubymarshal reads correctly; :meth:`SafeReader.read` hands them to it.
_DELEGATED = frozenset(
    {TYPE_NIL, TYPE_TRUE, TYPE_FALSE, TYPE_FIXNUM, TYPE_SYMBOL, TYPE_SYMLINK, TYPE_ARRAY,
     TYPE_FLOAT, TYPE_BIGNUM}
)
#: Tokens that name a class or module whose data we will not read.
_REFUSED = {
    TYPE_USERDEF: "user-defined _dump",
    TYPE_USRMARSHAL: "marshal_dump",
    TYPE_EXTENDED: "extended object",
    TYPE_STRUCT: "Struct",
    TYPE_DATA: "T_DATA",
    TYPE_CLASS: "Class",
    TYPE_MODULE: "Module",
    TYPE_MODULE_OLD: "Module",
    TYPE_REGEXP: "Regexp",
}
_INCOMPLETE = object()  # placeholder of an object whose contents are still being read
MAX_DEPTH = 64


class RubySymbol(str):
    """A Ruby Symbol's name (equal to the string of the same text)."""

    __slots__ = ()


@dataclass
class RubyEntry:
    """An allow-listed Ruby object: its class and instance variables (``@value``, ...)."""

    class_name: str
    ivars: dict[str, Any] = field(default_factory=dict)


class SafeReader(Reader):  # type: ignore[misc]
    def __init__(self, fd: io.BytesIO) -> None:
        super().__init__(fd)
        self.depth = 0
        #: Strings whose bytes were invalid in their encoding (decoded with U+FFFD).
        self.replaced = 0

    # -- dispatch ----------------------------------------------------------------------

    def read(self, in_ivar: bool = False) -> Any:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise Corrupt(f"nested deeper than {MAX_DEPTH} levels")
        try:
            token = self.fd.read(1)
            if not token:
                raise Truncated("value ends in the middle")
            if token in _DELEGATED:
                self.fd.seek(-1, io.SEEK_CUR)
                return super().read()
            if token == TYPE_IVAR:
                return self._read_with_ivars()
            if token == TYPE_STRING:
                return self._read_string()
            if token in (TYPE_HASH, TYPE_HASH_DEF):
                return self._read_hash(token == TYPE_HASH_DEF)
            if token == TYPE_UCLASS:
                return self._read_user_class(with_ivars=False)
            if token == TYPE_OBJECT:
                return self._read_object()
            if token == TYPE_LINK:
                return self._read_link()
            if token in _REFUSED:
                raise UnknownRubyClass(self._refused_name(token))
            raise Corrupt(f"unknown type byte {token!r}")
        finally:
            self.depth -= 1

    # -- what rubymarshal lacks or gets wrong ------------------------------------------

    def _register(self) -> int:
        self.objects.append(_INCOMPLETE)
        return len(self.objects) - 1

    def _read_string(self, ivars: bool = False) -> str | bytes:
        index = self._register()
        raw = self.read_blob()
        value: str | bytes = self._decode(raw, self._read_ivars()) if ivars else raw
        self.objects[index] = value
        return value

    def _read_hash(self, with_default: bool) -> dict[Any, Any]:
        index = self._register()
        result: dict[Any, Any] = {}
        for _ in range(self.read_long()):
            key = self.ensure_hashable(self.read())
            result[key] = self.read()
        if with_default:
            self.read()  # the default value: read (to keep the stream in step), not kept
        self.objects[index] = result
        return result

    def _read_with_ivars(self) -> Any:
        token = self.fd.read(1)
        if token == TYPE_STRING:
            return self._read_string(ivars=True)
        if token == TYPE_UCLASS:
            return self._read_user_class(with_ivars=True)
        if token in (TYPE_OBJECT, TYPE_LINK, TYPE_IVAR):
            raise Corrupt(f"instance variables on {token!r}")
        self.fd.seek(-1, io.SEEK_CUR)
        value = self.read()
        self._read_ivars()  # e.g. a Symbol's encoding: not needed
        return value

    def _read_user_class(self, with_ivars: bool) -> Any:
        name = self._class_name()
        token = self.fd.read(1)
        if name in STRING_CLASSES and token == TYPE_STRING:
            return self._read_string(ivars=with_ivars)
        if name in HASH_CLASSES and token in (TYPE_HASH, TYPE_HASH_DEF):
            value = self._read_hash(token == TYPE_HASH_DEF)
            if with_ivars:
                self._read_ivars()
            return value
        raise UnknownRubyClass(name)

    def _read_object(self) -> RubyEntry:
        name = self._class_name()
        if name not in OBJECT_CLASSES:
            raise UnknownRubyClass(name)
        index = self._register()
        entry = RubyEntry(name, self._read_ivars())
        self.objects[index] = entry
        return entry

    def _read_link(self) -> Any:
        index = self.read_long()
        if not 0 <= index < len(self.objects):
            raise Corrupt(f"link to object {index}, which does not exist")
        value = self.objects[index]
        if value is _INCOMPLETE or value is None:
            raise Corrupt("link to an object that contains it (a cycle)")
        return value

    def _read_ivars(self) -> dict[str, Any]:
        ivars: dict[str, Any] = {}
        for _ in range(self.read_long()):
            name = self.read()
            if not isinstance(name, RubySymbol):
                raise Corrupt("instance variable name is not a symbol")
            ivars[str(name)] = self.read()
        return ivars

    def _class_name(self) -> str:
        name = self.read()
        if not isinstance(name, RubySymbol):
            raise Corrupt("class name is not a symbol")
        return str(name)

    def _refused_name(self, token: bytes) -> str:
        try:
            if token in (TYPE_USERDEF, TYPE_USRMARSHAL, TYPE_STRUCT, TYPE_DATA, TYPE_EXTENDED):
                return self._class_name()
            if token in (TYPE_CLASS, TYPE_MODULE, TYPE_MODULE_OLD):
                return f"{_REFUSED[token]} {self.read_blob().decode('utf-8', 'replace')}"
        except (Skip, struct.error, ValueError, IndexError):
            pass  # the name is only for the report; the value is refused either way
        return _REFUSED[token]

    def _decode(self, raw: bytes, ivars: dict[str, Any]) -> str:
        codec = "utf-8"  # E true (UTF-8) and E false (US-ASCII) alike
        name = ivars.get("encoding")
        if isinstance(name, (bytes, str)):
            label = name.decode("ascii", "replace") if isinstance(name, bytes) else name
            try:
                codec = codecs.lookup(label).name
            except LookupError:
                codec = "utf-8"
        try:
            text = raw.decode(codec)
        except UnicodeDecodeError:
            self.replaced += 1
            return _without_nul(raw.decode(codec, "replace"))
        return self._count_nul(text)

    def _count_nul(self, text: str) -> str:
        if "\x00" in text:
            self.replaced += 1
            return _without_nul(text)
        return text

    # -- rubymarshal's primitives, made strict -------------------------------------------

    def read_blob(self) -> bytes:
        size = self.read_long()
        if size < 0:
            raise Corrupt(f"negative length {size}")
        data: bytes = self.fd.read(size)
        if len(data) != size:
            raise Truncated(f"a {size}-byte string has only {len(data)} bytes")
        return data

    def read_symreal(self) -> RubySymbol:
        raw = self.read_blob()
        try:
            name = RubySymbol(self._count_nul(raw.decode("utf-8")))
        except UnicodeDecodeError:
            self.replaced += 1
            name = RubySymbol(_without_nul(raw.decode("utf-8", "replace")))
        self.symbols.append(name)  # per reader: nothing is interned process-wide
        return name


def _without_nul(text: str) -> str:
    # Ruby strings may hold U+0000; PostgreSQL text cannot (and flask-chat refuses it at
    # send), so it is mapped like an invalid byte.
    return text.replace("\x00", "\ufffd")


@dataclass
class Decoded:
    value: Any
    #: Strings with bytes invalid in their encoding, decoded with U+FFFD.
    replaced: int = 0


def loads(data: bytes) -> Decoded:
    """Read one ``Marshal.dump`` value; raises a :class:`~.errors.Skip` subclass.

    Binary strings stay ``bytes`` (see :func:`plain`); everything else is plain Python.
    """
    if len(data) < 2:
        raise Truncated("fewer than 2 bytes")
    if data[0] != 4 or data[1] > 8:
        raise Corrupt(f"not Ruby Marshal 4.8 data (starts {data[:2].hex()})")
    fd = io.BytesIO(data)
    fd.seek(2)
    reader = SafeReader(fd)
    try:
        value = reader.read()
    except Skip:
        raise
    except (struct.error, EOFError) as exc:
        raise Truncated(f"value ends in the middle ({exc})") from None
    except (ValueError, TypeError, IndexError, KeyError, OverflowError, UnicodeError) as exc:
        raise Corrupt(f"{type(exc).__name__}: {exc}") from None
    except RecursionError:
        raise Corrupt("nested too deeply") from None
    if fd.tell() != len(data):
        raise Corrupt(f"{len(data) - fd.tell()} bytes after the value")
    return Decoded(value, reader.replaced)


def plain(value: Any, decoded: Decoded) -> Any:
    """The value as JSON-ready Python: binary strings read as UTF-8 (invalid bytes
    replaced and counted on ``decoded``), symbols as strings.

    Shared objects are converted once (a value made of nested links would otherwise
    cost exponential time).
    """
    return _plain(value, decoded, {})


def _plain(value: Any, decoded: Decoded, seen: dict[int, Any]) -> Any:
    if isinstance(value, (dict, list, bytes)):
        done = seen.get(id(value))
        if done is not None:
            return done
    if isinstance(value, dict):
        result: Any = {_plain(k, decoded, seen): _plain(v, decoded, seen) for k, v in value.items()}
    elif isinstance(value, list):
        result = [_plain(v, decoded, seen) for v in value]
    elif isinstance(value, bytes):
        try:
            result = value.decode("utf-8")
            if "\x00" in result:
                decoded.replaced += 1
                result = _without_nul(result)
        except UnicodeDecodeError:
            decoded.replaced += 1
            result = _without_nul(value.decode("utf-8", "replace"))
    elif isinstance(value, str):
        return str(value)
    elif isinstance(value, tuple):  # an Array used as a hash key
        return tuple(_plain(v, decoded, seen) for v in value)
    elif isinstance(value, RubyEntry):
        raise UnknownRubyClass(value.class_name, f"{value.class_name} inside a value")
    else:
        return value
    seen[id(value)] = result
    return result
