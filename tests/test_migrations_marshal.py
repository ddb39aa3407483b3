"""Reading legacy Rails cache values (``flask_chat_migrations.marshal`` and ``.entries``)
against bytes written by real Ruby: the shared fixture set, and this repository's own
(``tests/fixtures/ruby-cases``, made by ``tests/fixtures/ruby/make_fixtures.rb``)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from typing import Any

import pytest
import rubymarshal.reader
from conftest import require
from flask_chat_migrations.entries import unwrap
from flask_chat_migrations.errors import Corrupt, NotAHistory, Skip, Truncated, UnknownRubyClass
from flask_chat_migrations.history import parse_history
from flask_chat_migrations.marshal import loads

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.path.join(HERE, "fixtures", "rails-cache")
OWN = os.path.join(HERE, "fixtures", "ruby-cases")
SCRIPT = os.path.join(HERE, "fixtures", "ruby", "make_fixtures.rb")


def manifest(folder: str) -> list[dict[str, Any]]:
    with open(os.path.join(folder, "manifest.json"), encoding="utf-8") as f:
        return list(json.load(f))


def load(folder: str, item: dict[str, Any]) -> tuple[bytes, dict[str, Any]]:
    with open(os.path.join(folder, item["file"]), "rb") as f:
        raw = f.read()
    with open(os.path.join(folder, f"{item['name']}.expected.json"), encoding="utf-8") as f:
        return raw, json.load(f)


def expected_format(item: dict[str, Any], expected: dict[str, Any]) -> str:
    # A compressed Rails 3.0 entry and a compressed 3.2 one are the same bytes.
    compressed = (expected["entry"] or {}).get("compressed")
    if item["format"] in ("rails30-entry", "rails32-entry") and compressed:
        return "rails3-entry"
    return str(item["format"])


SHARED_ITEMS = manifest(SHARED)
OWN_ITEMS = manifest(OWN)


@pytest.mark.parametrize("item", SHARED_ITEMS, ids=[i["name"] for i in SHARED_ITEMS])
def test_every_shared_fixture_decodes_to_its_expected_json(item: dict[str, Any]) -> None:
    raw, expected = load(SHARED, item)
    assert len(raw) == item["bytes"]
    got = unwrap(raw)
    assert got.value == expected["value"]
    assert got.entry == expected["entry"]
    assert got.format == expected_format(item, expected)
    parse_history(got.value)  # and every one is a history


GOOD = [i for i in OWN_ITEMS if i["format"] != "refused"]
BAD = [i for i in OWN_ITEMS if i["format"] == "refused"]


@pytest.mark.parametrize("item", GOOD, ids=[i["name"] for i in GOOD])
def test_real_ruby_content_cases_and_formats_decode_right(item: dict[str, Any]) -> None:
    """Each content case (case-*), every format around one history that holds them all
    (format-*), Ruby 1.8-era strings, and the four-user scenario."""
    raw, expected = load(OWN, item)
    got = unwrap(raw)
    assert got.value == expected["value"]
    assert got.entry == expected["entry"]
    assert got.format == expected_format(item, expected)
    assert got.replaced == expected["replaced"]
    parse_history(got.value)


@pytest.mark.parametrize("item", BAD, ids=[i["name"] for i in BAD])
def test_values_that_are_not_histories_or_hold_unknown_classes_are_refused(
    item: dict[str, Any],
) -> None:
    raw, expected = load(OWN, item)
    with pytest.raises(Skip) as caught:
        parse_history(unwrap(raw).value)
    assert caught.value.code == expected["error"]
    assert expected["detail"] in caught.value.detail
    if isinstance(caught.value, UnknownRubyClass):
        assert caught.value.class_name == expected["detail"]


def test_what_rubymarshal_alone_gets_wrong() -> None:
    """Why the reader is extended: rubymarshal refuses HashWithIndifferentAccess,
    SafeBuffer and hashes with a default value, turns invalid UTF-8 into mojibake
    without a word, and builds objects of any class it is handed."""
    def raw(name: str) -> bytes:
        with open(os.path.join(OWN, f"case-{name}.bin"), "rb") as f:
            return f.read()

    for name in ("hwia", "safe_buffer", "default_value"):
        with pytest.raises(ValueError, match="not recognized"):
            rubymarshal.reader.loads(raw(name))
    mojibake = rubymarshal.reader.loads(raw("invalid_utf8"))["2_User"][
        rubymarshal.reader.Symbol("messages")][0][rubymarshal.reader.Symbol("message_text")]
    assert str(mojibake) == "bad ÿ byte"  # the byte 0xFF read as Latin-1
    ours = unwrap(raw("invalid_utf8")).value["2_User"]["messages"][0]["message_text"]
    assert ours == "bad \ufffd byte"
    with open(os.path.join(OWN, "bad-unknown-class-object.bin"), "rb") as f:
        evil = f.read()
    built = rubymarshal.reader.loads(evil)["2_User"][rubymarshal.reader.Symbol("messages")][0]
    assert type(built).__name__ == "RubyObject"  # rubymarshal made one
    with pytest.raises(UnknownRubyClass):
        loads(evil)


def test_no_class_outside_the_allow_list_is_ever_read() -> None:
    cases = {
        b"\x04\x08o:\x0bKernel\x00": "Kernel",  # an object of any other class
        b"\x04\x08c\x0bKernel": "Class Kernel",
        b"\x04\x08m\x0bKernel": "Module Kernel",
        b"\x04\x08u:\x09Time\x06x": "Time",  # _dump data
        b"\x04\x08U:\x09Date[\x00": "Date",  # marshal_dump data
        b"\x04\x08S:\x0bPerson\x00": "Person",
        b"\x04\x08e:\x0bKernel{\x00": "Kernel",
        b"\x04\x08C:\x0bMyHash{\x00": "MyHash",  # a Hash subclass not on the list
        b'\x04\x08IC:\x0bMyText"\x06x\x06:\x06ET': "MyText",
        b"\x04\x08/\x06x\x00": "Regexp",
    }
    for raw, name in cases.items():
        with pytest.raises(UnknownRubyClass) as caught:
            loads(raw)
        assert caught.value.class_name == name, raw


def test_every_truncation_of_a_real_value_is_refused_never_misread() -> None:
    for name in ("r32-entry-basic", "as61-entry-long", "r71-basic-expires-version",
                 "r70-long", "dalli2-long-compressed", "payload-unicode"):
        with open(os.path.join(SHARED, f"{name}.bin"), "rb") as f:
            raw = f.read()
        for cut in range(len(raw)):
            with pytest.raises((Truncated, Corrupt, NotAHistory)):
                parse_history(unwrap(raw[:cut]).value)


def test_corrupt_values_are_refused_with_a_reason() -> None:
    with open(os.path.join(SHARED, "payload-basic.bin"), "rb") as f:
        good = f.read()
    cases = {
        b"": Truncated,
        b"\x04": Truncated,
        b"\x05\x08{\x00": Corrupt,  # another Marshal version
        b"\x04\x08{\x00trailing": Corrupt,
        b"\x04\x08@\x06": Corrupt,  # a link to nothing
        b"\x04\x08[\x06@\x00": Corrupt,  # an array holding itself
        b"\x04\x08;\x06": Corrupt,  # a symbol link to nothing
        b"\x04\x08Z": Corrupt,  # no such type byte
        b"\x00\x11\x01": Truncated,  # a Rails 7.1 header cut short
        b"\x00\x11\x09" + b"\x00" * 8 + b"\xff\xff\xff\xff" + good[2:]: Corrupt,  # 7.1 type 9
        b"\x01\x78\x9c garbage": Corrupt,  # Rails 7.0 compressed, not zlib
        b"\x78\x9c\xff\xff\xff": Corrupt,  # dalli compressed, bad deflate data
        b"hello": Corrupt,
        good[:2] + b"Z" + good[3:]: Corrupt,  # a type byte overwritten
        b"\x04\x08" + b"[\x06" * 100 + b"0": Corrupt,  # nested past the depth limit
    }
    for raw, error in cases.items():
        with pytest.raises(error):
            unwrap(raw)
    # A byte overwritten inside a string still decodes; the history check catches it.
    with pytest.raises(NotAHistory, match="conversation key"):
        parse_history(unwrap(good[:10] + b"\xff" + good[11:]).value)


def test_nested_shared_links_cost_linear_time() -> None:
    """a0 = [1]; a1 = [a0, a0]; ... a50 = [a49, a49]: 2**50 paths through 51 objects,
    as Ruby writes it (each array's second element a link to its first)."""
    depth = 50
    raw = b"".join([b"\x04\x08", b"[\x07" * depth, b"[\x06i\x06",
                    *(b"@" + bytes([index + 5]) for index in range(depth, 0, -1))])
    value = unwrap(raw).value
    for _ in range(depth):
        assert value[0] is value[1]
        value = value[0]
    assert value == [1]


@pytest.mark.slow
def test_the_ruby_script_still_writes_what_is_committed(tmp_path: Any) -> None:
    """Re-run the generator with real Ruby (CI installs ruby and ruby-activesupport):
    the same fixtures, decoding to what Ruby says they hold."""
    if shutil.which("ruby") is None:
        require("no ruby: apt-get install ruby ruby-activesupport")
    probe = subprocess.run(["ruby", "-e", 'require "active_support"'], capture_output=True)
    if probe.returncode != 0:
        require("no ActiveSupport for ruby: apt-get install ruby-activesupport")
    out = tmp_path / "cases"
    result = subprocess.run(["ruby", SCRIPT, str(out)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    fresh = manifest(str(out))
    assert [i["name"] for i in fresh] == [i["name"] for i in OWN_ITEMS]
    for item in fresh:
        raw, expected = load(str(out), item)
        committed_raw, committed = load(OWN, item)
        assert expected == committed, item["name"]
        if "compressed" not in item["name"] and item["format"] != "dalli2-zlib":
            assert raw == committed_raw, item["name"]  # zlib builds may differ; the rest not
        if item["format"] == "refused":
            continue
        got = unwrap(raw)
        assert (got.value, got.entry, got.replaced) == (
            expected["value"], expected["entry"], expected["replaced"]), item["name"]
