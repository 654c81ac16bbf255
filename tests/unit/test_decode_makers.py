"""The record makers of the log → record path: the C one (``protocols/_speedups.c``) and the Python one
(``protocols.trades.slot_filler``) build exactly what the dataclass's own ``__init__`` builds."""

from __future__ import annotations

import dataclasses
import gc
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocols import trades
from protocols.trades import slot_filler, slot_maker
from records import DexLiquidity, DexTrade, to_dict
from records.chain import TokenAmount

pytestmark = pytest.mark.unit

try:
    from protocols._speedups import slot_maker as c_slot_maker
except ImportError:  # pragma: no cover - make install builds it; the test below says so
    c_slot_maker = None

VALUES = st.one_of(
    st.none(),
    st.integers(min_value=-(1 << 256), max_value=1 << 256),
    st.text(max_size=8),
    st.decimals(allow_nan=False, allow_infinity=False),
    st.tuples(st.integers(), st.text(max_size=3)),
    st.lists(st.integers(), max_size=2),
)


def test_the_c_maker_is_built_and_used() -> None:
    assert c_slot_maker is not None, "protocols/_speedups.c is not built (make install)"
    assert type(trades._dex_trade).__name__ == "builtin_function_or_method"
    assert type(trades._dex_liquidity).__name__ == "builtin_function_or_method"


_PYTHON_MAKERS: dict[type[Any], Any] = {}


def slot_filler_of(cls: type[Any]) -> Any:
    return _PYTHON_MAKERS.setdefault(cls, slot_filler(cls))


def makers(cls: type[Any]) -> list[Any]:
    found = [slot_filler_of(cls)]
    if c_slot_maker is not None:
        found.append(c_slot_maker(cls, tuple(f.name for f in dataclasses.fields(cls))))
    return found


@pytest.mark.parametrize("cls", [DexTrade, DexLiquidity])
@given(data=st.data())
def test_makers_build_the_records_init_builds(cls: type[Any], data: st.DataObject) -> None:
    values = [data.draw(VALUES) for _ in dataclasses.fields(cls)]
    expected = cls(*values)
    for make in makers(cls):
        got = make(*values)
        assert type(got) is cls
        assert got == expected
        assert [getattr(got, f.name) for f in dataclasses.fields(cls)] == values
        assert all(getattr(got, f.name) is v for f, v in zip(dataclasses.fields(cls), values, strict=True))
        # a record that refers to a tracked object (a list, a tuple of records) is seen by the cycle
        # collector; the C maker leaves one of ints, strings, Decimals and None untracked (it cannot be
        # in a cycle: CPython's rule for tuples), the Python maker cannot untrack
        holds_tracked = any(gc.is_tracked(v) for v in values)
        assert gc.is_tracked(got) == (holds_tracked or make is slot_filler_of(cls))
        with pytest.raises(dataclasses.FrozenInstanceError):
            got.log_index = 1


def test_a_trade_made_in_c_is_not_tracked_and_lives_and_dies_normally() -> None:
    if c_slot_maker is None:
        pytest.skip("protocols/_speedups.c is not built")
    values = [f"v{i}" for i in range(len(dataclasses.fields(DexTrade)))]
    made = trades._dex_trade(*values)
    assert not gc.is_tracked(made) and made == DexTrade(*values)
    records = [trades._dex_trade(*values) for _ in range(1000)]
    gc.collect()  # a full collection over untracked records: nothing freed wrongly, nothing leaked
    assert all(r == made for r in records)
    assert sorted(map(str, gc.get_referents(made))) == sorted([*values, str(DexTrade)])


def test_made_records_serialise_as_constructed_ones() -> None:
    values: dict[str, Any] = {f.name: f"v{i}" for i, f in enumerate(dataclasses.fields(DexLiquidity))}
    values.update(
        block_number=7, block_time=1, transaction_index=0, log_index=2, amount0_raw=3, amount1_raw=0,
        amount0=Decimal("0.003"), amount1=None, liquidity=None, tick_lower=None, tick_upper=None,
        amounts=(TokenAmount("0xa", 1, None),),
    )  # fmt: skip
    for make in makers(DexLiquidity):
        assert to_dict(make(*values.values())) == to_dict(DexLiquidity(**values))


def test_wrong_argument_count_and_non_slot_classes_are_refused() -> None:
    for make in makers(DexTrade):
        with pytest.raises(TypeError):
            make(1, 2, 3)

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        x: int

        def __post_init__(self) -> None:
            raise ValueError

    assert slot_maker(Checked) is Checked  # validation in __post_init__: only the class's own __init__
    if c_slot_maker is not None:
        with pytest.raises(TypeError, match="not an object slot"):
            c_slot_maker(DexTrade, ("no_such_field",))
        with pytest.raises(TypeError):
            c_slot_maker(DexTrade, ["block_number"])
