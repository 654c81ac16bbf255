"""``protocols._speedups.receipt_logs``: extraction's common case in C, the Python check for the rest.

The backfill and the follower extract with ``RECORD_MAKERS``, whose ``receipt_logs`` checks and makes a
receipt's logs in C when everything is as a node normally writes it, and otherwise hands the receipt to
``_receipt_logs``. Recorded mainnet blocks (ethereum-etl's fixtures: the goldens of
``test_extract_ethereum_etl``) are extracted both ways after each of a list of changes a node (or a
load balancer) can make to its answers: the same records, or the same error with the same message."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from core.errors import DexnodeError
from indexer.chain.extract import CLASSES, ExtractedBlock, Makers, _receipt_logs, extract_block
from indexer.pipeline.pipeline import RECORD_MAKERS
from protocols.trades import c_receipt_logs
from records import Log

ETL = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "ethereum-etl"

pytestmark = [
    pytest.mark.unit,
    pytest.mark.usefixtures("fixtures_dir"),
    pytest.mark.skipif(c_receipt_logs is None, reason="protocols/_speedups.c not built"),
]

Block = dict[str, Any]


def _result(path: Path) -> Any:
    return json.loads(path.read_text())["result"]


def _recorded() -> list[tuple[Block, list[Block]]]:
    stream = ETL / "test_stream" / "blocks_1755634_1755635"
    with_logs = ETL / "test_export_blocks_job" / "block_with_logs"
    cases = [
        (with_logs, "0x76250", ETL / "test_export_receipts_job" / "receipts_with_logs"),
        (stream, "0x1ac9f2", stream),
        (stream, "0x1ac9f3", stream),
    ]
    out = []
    for folder, n, receipts in cases:
        raw = _result(folder / f"web3_response.eth_getBlockByNumber_{n}_true.json")
        out.append(
            (
                raw,
                [
                    _result(receipts / f"web3_response.eth_getTransactionReceipt_{tx['hash']}.json")
                    for tx in raw["transactions"]
                ],
            )
        )
    return out


RECORDED = _recorded()
_HELIOS = ETL.parent / "mainnet-block-21925176-helios"
# mainnet block 21925176: 202 receipts, 463 logs (its transactions as hashes: compared log by log below)
HELIOS = (
    json.loads((_HELIOS / "block.json").read_text()),
    json.loads((_HELIOS / "receipts.json").read_text()),
)
C_ONLY = Makers(receipt_logs=c_receipt_logs)  # the C check, with the record classes themselves


def _first_log(receipts: list[Block]) -> tuple[Block, Block]:
    receipt = next(r for r in receipts if r["logs"])
    return receipt, receipt["logs"][0]


def _set(key: str, value: Any, *, log: bool = True) -> Callable[[Block, list[Block]], None]:
    def change(block: Block, receipts: list[Block]) -> None:
        receipt, lg = _first_log(receipts)
        (lg if log else receipt)[key] = value

    return change


def _drop(key: str, *, log: bool = True) -> Callable[[Block, list[Block]], None]:
    def change(block: Block, receipts: list[Block]) -> None:
        receipt, lg = _first_log(receipts)
        del (lg if log else receipt)[key]

    return change


def _upper(key: str, *, log: bool = True) -> Callable[[Block, list[Block]], None]:
    def change(block: Block, receipts: list[Block]) -> None:
        receipt, lg = _first_log(receipts)
        target = lg if log else receipt
        target[key] = target[key].upper().replace("0X", "0x")

    return change


def _topics(f: Callable[[list[Any]], Any]) -> Callable[[Block, list[Block]], None]:
    def change(block: Block, receipts: list[Block]) -> None:
        _, lg = _first_log(receipts)
        lg["topics"] = f(lg["topics"])

    return change


def _swap_log_indexes(block: Block, receipts: list[Block]) -> None:
    logs = [lg for r in receipts for lg in r["logs"]]
    logs[0]["logIndex"], logs[1]["logIndex"] = logs[1]["logIndex"], logs[0]["logIndex"]


def _last_log_topic_upper(block: Block, receipts: list[Block]) -> None:
    lg = [lg for r in receipts for lg in r["logs"]][-1]
    lg["topics"] = [t.upper().replace("0X", "0x") for t in lg["topics"]]


CHANGES: dict[str, Callable[[Block, list[Block]], None]] = {
    "as recorded": lambda block, receipts: None,
    "receipt block hash upper case": _upper("blockHash", log=False),
    "receipt block hash other": _set("blockHash", "0x" + "ab" * 32, log=False),
    "receipt block hash null": _set("blockHash", None, log=False),
    "receipt block number other spelling": _set("blockNumber", "0x0" + "76250", log=False),
    "receipt block number wrong": _set("blockNumber", "0x1", log=False),
    "receipt block number absent": _drop("blockNumber", log=False),
    "receipt tx hash upper case": _upper("transactionHash", log=False),
    "receipt tx hash null": _set("transactionHash", None, log=False),
    "receipt logs absent": _drop("logs", log=False),
    "receipt logs a tuple": lambda b, rs: _first_log(rs)[0].update(logs=tuple(_first_log(rs)[0]["logs"])),
    "log index upper-case X": _set("logIndex", "0X0"),
    "log index decimal": _set("logIndex", "12"),
    "log index with underscore": _set("logIndex", "0x_1"),
    "log index an int": _set("logIndex", 0),
    "log index absent": _drop("logIndex"),
    "log indexes swapped": _swap_log_indexes,
    "log block hash upper case": _upper("blockHash"),
    "log block hash other": _set("blockHash", "0x" + "cd" * 32),
    "log block hash absent": _drop("blockHash"),
    "log block number other": _set("blockNumber", "0x2"),
    "log tx hash upper case": _upper("transactionHash"),
    "log tx hash other": _set("transactionHash", "0x" + "ef" * 32),
    "log removed": _set("removed", True),
    "log removed false": _set("removed", False),
    "log removed 0": _set("removed", 0),
    "log address upper case": _upper("address"),
    "log address non-ASCII": _set("address", "0xÄbc"),
    "log address an int": _set("address", 5),
    "log address absent": _drop("address"),
    "log data an int": _set("data", 7),
    "log data absent": _drop("data"),
    "log topics upper case": _topics(lambda ts: [t.upper().replace("0X", "0x") for t in ts]),
    "last log topics upper case": _last_log_topic_upper,
    "log topics none": _topics(lambda ts: []),
    "log topics five": _topics(lambda ts: [*ts, *ts, *ts, *ts, *ts][:5]),
    "log topics a tuple": _topics(tuple),
    "log topic null": _topics(lambda ts: [None, *ts[1:]]),
    "log topics absent": lambda b, rs: _first_log(rs)[1].pop("topics"),
}


def _outcome(block: Block, receipts: list[Block], makers: Makers) -> ExtractedBlock | tuple[type, str]:
    try:
        return extract_block(block, receipts, makers)
    except (DexnodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
        return type(exc), str(exc)


def _logs(block: Block, receipts: list[Block], use_c: bool) -> tuple[list[Log], int] | tuple[type, str]:
    """Every receipt's logs as ``extract_block`` gathers them: C first (when ``use_c``), else Python."""
    out: list[Log] = []
    last = -1
    number_hex, block_hash = block["number"], block["hash"].lower()
    try:
        for i, (tx, receipt) in enumerate(zip(block["transactions"], receipts, strict=True)):
            tx_hash = (tx if isinstance(tx, str) else tx["hash"]).lower()
            args = (receipt, i, tx_hash, int(number_hex, 16), block_hash, number_hex, out, last, Log)
            got = c_receipt_logs(*args) if use_c else None
            last = _receipt_logs(*args) if got is None else got
    except (DexnodeError, KeyError, TypeError, AttributeError, ValueError) as exc:
        return type(exc), str(exc)
    return out, last


@pytest.mark.parametrize("change", list(CHANGES), ids=list(CHANGES))
def test_the_c_check_accepts_and_refuses_what_the_python_check_does(change: str) -> None:
    for block, receipts in [*RECORDED, HELIOS]:
        if not any(r["logs"] for r in receipts):
            continue
        block, receipts = copy.deepcopy(block), copy.deepcopy(receipts)
        CHANGES[change](block, receipts)
        assert _logs(block, receipts, use_c=True) == _logs(block, receipts, use_c=False)
        if isinstance(block["transactions"][0], dict):
            python = _outcome(block, receipts, CLASSES)
            assert _outcome(block, receipts, C_ONLY) == python
            assert _outcome(block, receipts, RECORD_MAKERS) == python


def test_the_recorded_receipts_take_the_c_path() -> None:
    """Not a fallback every time: each recorded receipt is accepted in C, with the logs Python makes."""
    taken = logs = 0
    for block, receipts in [*RECORDED, HELIOS]:
        python = _logs(block, receipts, use_c=False)
        number_hex, block_hash = block["number"], block["hash"].lower()
        out: list[Log] = []
        last = -1
        for i, (tx, receipt) in enumerate(zip(block["transactions"], receipts, strict=True)):
            tx_hash = (tx if isinstance(tx, str) else tx["hash"]).lower()
            got = c_receipt_logs(
                receipt, i, tx_hash, int(number_hex, 16), block_hash, number_hex, out, last, Log
            )
            assert got is not None
            last = got
            taken += 1
        assert (out, last) == python
        logs += len(out)
    assert (taken, logs) == (6 + 202, 4 + 463)


def test_a_failing_maker_leaves_the_list_as_it_was() -> None:
    block, receipts = HELIOS
    receipt = next(r for r in receipts if len(r["logs"]) > 1)
    i = receipts.index(receipt)
    made = 0

    def maker(*values: Any) -> Log:
        nonlocal made
        made += 1
        if made == 2:
            raise RuntimeError("maker failed")
        return Log(*values)

    out: list[Any] = ["kept"]
    tx_hash, number_hex = block["transactions"][i].lower(), block["number"]
    with pytest.raises(RuntimeError, match="maker failed"):
        c_receipt_logs(receipt, i, tx_hash, int(number_hex, 16), block["hash"], number_hex, out, -1, maker)
    assert out == ["kept"] and made == 2
