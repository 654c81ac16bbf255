"""The C extensions sinks/_copy.c, protocols/_speedups.c and api/_pagejson.c given what their callers
never give them: a slot of another class, a half-initialised encoder, a list changed from Python code
they call, an out-of-range int. Each must raise a clear error or do what the Python path does, never
read or write outside an object (each of these crashed or read freed memory before the fix).
And without the extensions, the Python paths answer the same."""

from __future__ import annotations

import gc
import importlib
import subprocess
import sys
import weakref
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from indexer.chain.extract import InconsistentBlockError, _receipt_logs
from records import Log
from sinks import copy_text
from sinks.copy_text import record_encoder

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def _optional(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except ImportError:  # pragma: no cover - make install builds them
        return None


_copy: Any = copy_text._copy
_speedups = _optional("protocols._speedups")
_pagejson = _optional("api._pagejson")

needs_copy = pytest.mark.skipif(_copy is None, reason="sinks/_copy.c not built")
needs_speedups = pytest.mark.skipif(_speedups is None, reason="protocols/_speedups.c not built")
needs_pagejson = pytest.mark.skipif(_pagejson is None, reason="api/_pagejson.c not built")


class _Wide:
    __slots__ = ("a", "b", "c", "d", "e", "f", "g", "h")


class _Narrow:
    __slots__ = ("x",)


# a member descriptor of _Wide set on _Narrow: its offset lies past the end of a _Narrow object
_Narrow.far = _Wide.__dict__["h"]  # type: ignore[attr-defined]


@needs_copy
def test_copy_reads_a_slot_of_another_class_by_name_as_python_does() -> None:
    table = sa.Table("t", sa.MetaData(), sa.Column("far", sa.Text, nullable=False))
    for python in (True, False):
        encode = record_encoder(table, ("far",), {}, record=_Narrow, python=python)
        with pytest.raises(TypeError, match="doesn't apply to a '_Narrow' object"):
            encode([_Narrow()])


@needs_speedups
def test_slot_maker_refuses_a_slot_of_another_class() -> None:
    with pytest.raises(TypeError, match="is not an object slot"):
        _speedups.slot_maker(_Narrow, ("far",))
    with pytest.raises(TypeError, match="named twice"):  # make() would leak the first value
        _speedups.slot_maker(_Wide, ("a", "b", "a"))
    make = _speedups.slot_maker(_Narrow, ("x",))
    assert make("v").x == "v"


@needs_copy
def test_an_encoder_whose_init_failed_refuses_to_encode() -> None:
    encoder = _copy.Encoder.__new__(_copy.Encoder)
    with pytest.raises(ValueError, match="unknown kind"):
        encoder.__init__((("x", _copy.STR, None), ("y", 99, None)))
    with pytest.raises(TypeError, match="not initialised"):
        encoder.encode([_Narrow()])
    with pytest.raises(TypeError, match="already initialised"):
        encoder.__init__((("x", _copy.STR, None),))


class _Row:
    def __init__(self, name: str) -> None:
        self.name = name


def test_copy_records_changed_by_a_converter_as_the_python_loop_sees_them() -> None:
    """A converter that empties the list being encoded and frees its records: both encoders stop
    after the row in progress, whose record is still read (the C loop held the list's old array)."""
    table = sa.Table("t", sa.MetaData(), sa.Column("j", sa.Text), sa.Column("name", sa.Text))
    answers = []
    for python in (True, False) if _copy is not None else (True,):
        rows = [_Row("r" + "x" * i) for i in range(50)]

        def empty(record: Any, rows: list[_Row] = rows) -> str:
            rows.clear()
            gc.collect()
            [_Row("garbage") for _ in range(100)]
            return "{}"

        encode = record_encoder(table, ("j", "name"), {"j": empty}, python=python)
        answers.append(encode(rows))
        del rows
    assert answers[0] == b"{}\tr\n"
    assert answers[-1] == answers[0]


@needs_copy
def test_copy_refuses_a_number_whose_text_would_break_the_row() -> None:
    table = sa.Table("t", sa.MetaData(), sa.Column("amount", sa.Numeric, nullable=False))
    encode = record_encoder(table, ("amount",), {})

    class Amount:
        def __init__(self, amount: object) -> None:
            self.amount = amount

    with pytest.raises(TypeError, match="a number expected, got str '1\\\\t2'"):
        encode([Amount("1\t2")])
    with pytest.raises(TypeError, match="a number expected"):
        encode([Amount("1\n5\t6")])
    assert encode([Amount(-(2**255)), Amount(12)]) == f"{-(2**255)}\n12\n".encode()


_BLOCK = "0x" + "ab" * 32
_TX = "0x" + "cd" * 32


def _log(index: int) -> dict[str, Any]:
    return {
        "logIndex": hex(index),
        "address": "0x" + "EF" * 20,
        "data": "0x",
        "topics": ["0x" + "01" * 32],
        "blockHash": _BLOCK,
        "blockNumber": "0x10",
        "transactionHash": _TX,
    }


def _receipt(n: int) -> dict[str, Any]:
    return {
        "blockHash": _BLOCK,
        "blockNumber": "0x10",
        "transactionHash": _TX,
        "logs": [_log(i) for i in range(n)],
    }


@needs_speedups
def test_receipt_logs_leaves_a_last_index_past_64_bits_to_the_python_check() -> None:
    out: list[Log] = []
    args = (_receipt(2), 0, _TX, 16, _BLOCK, "0x10", out, 2**70, Log)
    assert _speedups.receipt_logs(*args) is None  # was OverflowError, not the Python check's error
    assert out == []
    with pytest.raises(InconsistentBlockError, match="previous log index 1180591620717411303424"):
        _receipt_logs(*args)


@needs_speedups
def test_receipt_logs_with_a_maker_that_changes_the_receipt_as_python_does() -> None:
    """A maker (Python code) that empties the receipt's list of logs and frees them: C, like the Python
    loop, makes the log in progress and stops."""
    answers = []
    for check in (_speedups.receipt_logs, _receipt_logs):
        receipt = _receipt(40)

        def make(*fields: Any, receipt: dict[str, Any] = receipt) -> Log:
            receipt["logs"].clear()
            gc.collect()
            [_log(0) for _ in range(100)]  # reuse the freed memory
            return Log(*fields)

        out: list[Log] = []
        last = check(receipt, 0, _TX, 16, _BLOCK, "0x10", out, -1, make)
        answers.append((last, out))
    assert answers[0] == answers[1]
    assert answers[0][0] == 0 and len(answers[0][1]) == 1
    assert answers[0][1][0].address == "0x" + "ef" * 20


class _Raising:
    """A key that collides with "blockHash" and cannot be compared: looking "blockHash" up raises."""

    def __hash__(self) -> int:
        return hash("blockHash")

    def __eq__(self, other: object) -> bool:
        raise ValueError("not comparable")


@needs_speedups
def test_receipt_logs_raises_a_failed_lookup_as_python_does() -> None:
    for check in (_speedups.receipt_logs, _receipt_logs):
        receipt = _receipt(2)
        log = receipt["logs"][1]
        del log["blockHash"]
        log[_Raising()] = 1
        out: list[Log] = []
        with pytest.raises(ValueError, match="not comparable"):  # was SystemError from C
            check(receipt, 0, _TX, 16, _BLOCK, "0x10", out, -1, Log)
        if check is _speedups.receipt_logs:
            assert out == []


class _Shrinking:
    """A row whose __getitem__ empties the page's list of rows (and frees them)."""

    def __init__(self, rows: list[Any], value: int) -> None:
        self.rows, self.value = rows, value

    def __getitem__(self, i: int) -> int:
        self.rows.clear()
        gc.collect()
        return self.value

    def __len__(self) -> int:
        return 1


@needs_pagejson
def test_pagejson_rows_changed_while_written() -> None:
    rows: list[Any] = []
    rows.extend(_Shrinking(rows, i) for i in range(50))
    assert _pagejson.objects((b'{"a":',), rows, 1) == orjson.dumps([{"a": 0}])


@pytest.mark.parametrize("broken", [False, True], ids=["missing", "unloadable"])
@pytest.mark.parametrize("blocked", ["sinks._copy", "protocols._speedups", "api._pagejson"])
def test_without_the_extension_the_python_path_answers_the_same(blocked: str, broken: bool) -> None:
    """An extension not built leaves the Python path, silently; one built but not loadable here (for
    another Python: an undefined symbol, another ELF class) leaves it with a warning saying why. The
    answers are the same."""
    script = f"""
import sys
class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name != {blocked!r}:
            return None
        if {broken!r}:
            raise ImportError("undefined symbol: _PyFake_Symbol", name=name)
        raise ModuleNotFoundError("No module named " + name, name=name)
sys.meta_path.insert(0, Refuse())
from decimal import Decimal
import sqlalchemy as sa
from sinks import copy_text
from protocols import trades
from api import query
from records import Log
assert ({blocked!r} != "sinks._copy") == copy_text.C_ENCODER
assert ({blocked!r} != "protocols._speedups") == (trades.c_receipt_logs is not None)
assert ({blocked!r} != "api._pagejson") == (query._objects is not None)
t = sa.Table("t", sa.MetaData(), sa.Column("s", sa.Text), sa.Column("n", sa.Numeric, nullable=False))
class R:
    def __init__(self, s, n): self.s, self.n = s, n
rows = [R("a\\tb\\\\", 2**256 - 1), R(None, Decimal("-1.50")), R("é", -3)]
got = copy_text.record_encoder(t, ("s", "n"), {{}})(rows)
assert got == "a\\\\tb\\\\\\\\\\t{{}}\\n\\\\N\\t-1.50\\né\\t-3\\n".format(2**256 - 1).encode(), got
values = (16, "0xab", "0xcd", 0, 1, "0xef", "0x", "0x01", None, None, None)
assert trades.slot_maker(Log)(*values) == Log(*values)
print("ok")
"""
    done = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "ok"
    warned = f"{blocked} not loaded" in done.stderr
    assert warned == broken, done.stderr
    if broken:
        assert "undefined symbol: _PyFake_Symbol" in done.stderr


def test_an_unset_slot_is_an_attribute_error_in_both_encoders() -> None:
    """A record made without its fields (object.__new__): the slot holds NULL; C reads it at its offset
    and must raise as the member descriptor does, not print or dereference it."""
    table = sa.Table("t", sa.MetaData(), sa.Column("address", sa.Text), sa.Column("log_index", sa.Numeric))
    for python in (True, False) if _copy is not None else (True,):
        for column in ("address", "log_index"):
            encode = record_encoder(table, (column,), {}, record=Log, python=python)
            with pytest.raises(AttributeError, match=column):
                encode([object.__new__(Log)])


class _Holder:
    encode: Any = None


@needs_copy
def test_an_encoder_in_a_reference_cycle_is_collected() -> None:
    """A converter that refers (through its defaults) to what holds the encoder: a cycle the collector
    must see through the encoder to free it."""
    holder = _Holder()
    holder.encode = _copy.Encoder((("x", _copy.CONVERT, lambda r, holder=holder: "x"),)).encode
    assert holder.encode([object()]) == b"x\n"
    ref = weakref.ref(holder)
    del holder
    gc.collect()
    assert ref() is None


@needs_pagejson
def test_pagejson_out_of_memory_at_the_closing_bracket_keeps_the_row_alive() -> None:
    """Each allocation of objects() failing in turn (the last one grows the buffer for its ']'): a
    MemoryError, and the row's references as they were (the row was released twice there)."""
    testcapi = pytest.importorskip("_testcapi")
    key = b'{"' + b"k" * 1016 + b'":'  # '[' + key + 'null' + '}' fills the first buffer exactly
    row = (None,)
    rows = [row]
    assert _pagejson.objects((key,), rows, 1) == orjson.dumps([{"k" * 1016: None}])
    for start in range(4):
        before = sys.getrefcount(row)
        testcapi.set_nomemory(start, start + 1)
        try:
            _pagejson.objects((key,), rows, 1)
        except MemoryError:
            pass
        finally:
            testcapi.remove_mem_hooks()
        assert sys.getrefcount(row) == before
