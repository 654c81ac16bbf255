"""CEX feed throughput: the same recorded frames through dexnode and through cryptofeed, in one run.

Per exchange, the recorded frames of ``../shared/fixtures/cex/`` (OKX v5 books/trades/tickers;
Kraken book-1000, v1 frames for cryptofeed and the same frames as v2 for dexnode; Binance spot depth
+ REST snapshots + bookTicker + aggTrade) go through parse + normalise + book apply, checksums
verified where the exchange sends them (dexnode always verifies; cryptofeed's ``checksum_validation``
is shown on and off). dexnode's side includes making the records it publishes (``Trade``,
``Ticker``, one ``BookDelta`` per level). Printed: dexnode's frames/s, ``BookDelta`` records/s and book
levels/s (deltas plus snapshot levels), cryptofeed's frames/s, and the ratio of cryptofeed's CPU time to
dexnode's on the same recording, per run of ``--repeat`` runs alternating the two (a shared machine's
load moves both sides of one run alike): the median and the range. Then what the two protocol versions
cost to decode alone (Kraken: cryptofeed reads v1, arrays of strings; dexnode reads v2, an object per
level) and the memory of one book of 5,000 levels.

cryptofeed is installed (once) into ``.dexnode/bench/cryptofeed-venv`` and run there
(``bench/cex_cryptofeed.py``), so nothing of it enters dexnode's environment.

    .venv/bin/python bench/cex.py [--rounds 20] [--repeat 5] [--no-peer]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
import tracemalloc
from collections.abc import Callable
from decimal import Decimal
from pathlib import Path
from statistics import median
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cex.book import L2Book  # noqa: E402
from cex.exchange import Exchange  # noqa: E402
from cex.exchanges import kraken  # noqa: E402
from cex.exchanges.binance import Binance  # noqa: E402
from cex.exchanges.kraken import Kraken  # noqa: E402
from cex.exchanges.okx import Okx  # noqa: E402
from cex.sync import BookSync  # noqa: E402
from devnet.exchanges import kraken_v2, recording  # noqa: E402

FIXTURES = REPO.parent / "shared" / "fixtures" / "cex"
PEER_VENV = REPO / ".dexnode" / "bench" / "cryptofeed-venv"
PEER_PACKAGES = ["cryptofeed>=2.4"]


def ensure_peer() -> Path:
    python = PEER_VENV / "bin" / "python"
    if (PEER_VENV / ".installed").exists():
        return python
    print(f"installing cryptofeed into {PEER_VENV} (once) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
    pip = [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check"]
    subprocess.run([*pip, *PEER_PACKAGES], check=True)
    (PEER_VENV / ".installed").touch()
    return python


def _frames() -> dict[str, tuple[Callable[[], Exchange], list[Any], Callable[[BookSync, Exchange], None]]]:
    okx = recording.received(FIXTURES / "okx" / "OKX.ws.1.0")
    kraken = kraken_v2.from_v1(FIXTURES / "kraken" / "KRAKEN.ws.50.0.first500lines")
    binance_lines = [
        (line.timestamp or 0.0, line.url, line.payload)
        for name in ("BINANCE.ws.1.0", "BINANCE.http.0.0")
        for line in recording.read(FIXTURES / "binance" / name)
        if line.kind in ("received", "rest")
    ]
    binance_lines.sort(key=lambda x: x[0])
    # REST snapshots are interleaved as (native symbol, body bytes): what dexnode's HTTP client hands
    # parse_snapshot (both sides parse them; cryptofeed's side gets the body text from its stub client, also
    # made before the timing)
    binance: list[Any] = [
        payload if url is None else (url.split("symbol=")[1].split("&")[0], payload.encode())
        for _, url, payload in binance_lines
    ]

    def make_kraken() -> Exchange:
        exchange = Kraken(depth=1000)
        exchange.parse(kraken.instrument_frame(), 0)
        return exchange

    def make_binance() -> Exchange:
        exchange = Binance()
        for symbol in ("NKN-USDT", "BLZ-ETH", "LRC-BTC", "RUNE-EUR"):
            exchange.to_exchange_symbol(symbol)
        return exchange

    return {
        "okx": (Okx, okx, lambda s, e: None),
        "kraken": (make_kraken, kraken.frames, lambda s, e: None),
        "binance": (make_binance, binance, lambda s, e: None),
    }


def dexnode_round(make: Callable[[], Exchange], frames: list[Any]) -> tuple[int, int, int]:
    """One pass: (book levels applied, ``BookDelta`` records published, records published in all)."""
    exchange = make()
    syncs: dict[str, BookSync] = {}
    levels = deltas = records = 0
    for frame in frames:
        if type(frame) is tuple:  # a REST snapshot (Binance)
            native, body = frame
            symbol = exchange.symbols[native]  # type: ignore[attr-defined]
            sync = syncs.setdefault(symbol, BookSync(exchange.name, symbol, exchange.rule, None, True))
            snap = exchange.parse_snapshot(symbol, body, 0)
            levels += len(snap.bids) + len(snap.asks)
            out = sync.on_snapshot(snap)  # the BookSnapshot, then the deltas of updates buffered before it
            records += len(out)
            deltas += len(out) - 1
            continue
        parsed = exchange.parse(frame, 0)
        records += len(parsed.records)
        for msg in parsed.books:
            sync = syncs.get(msg.symbol)
            if sync is None:
                buffered = exchange.snapshot_by == "rest"
                sync = BookSync(
                    exchange.name, msg.symbol, exchange.rule, exchange.verify, buffered, exchange.book_depth
                )
                syncs[msg.symbol] = sync
            levels += len(msg.bids) + len(msg.asks)
            out = sync.on_message(msg)
            records += len(out)
            if not msg.snapshot:  # an applied update: one BookDelta per level (a failed check stops the run)
                deltas += len(out)
    failures = sum(
        s.counters.checksum_failures + s.counters.gaps + s.counters.crossed for s in syncs.values()
    )
    if failures:
        raise SystemExit(f"dexnode: {failures} book check failures on the recording")
    return levels, deltas, records


def book_memory(levels: int = 5_000) -> int:
    """Bytes held by one L2Book of ``levels`` levels (half bids, half asks), Decimal keys and sizes."""
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    book = L2Book()
    half = levels // 2
    book.load(
        [(Decimal(f"{30000 - i}.{i % 100:02d}"), Decimal(f"0.{i:05d}1")) for i in range(half)],
        [(Decimal(f"{30001 + i}.{i % 100:02d}"), Decimal(f"0.{i:05d}2")) for i in range(half)],
    )
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    size = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert len(book.bids) + len(book.asks) == levels
    return size


def _ours(frames: dict[str, Any], rounds: int) -> dict[str, dict[str, float]]:
    """Per exchange: CPU seconds for ``rounds`` passes, book levels and deltas per pass."""
    ours: dict[str, dict[str, float]] = {}
    for name, (make, recorded, _) in frames.items():
        dexnode_round(make, recorded)  # warm-up, and the checks pass
        start = time.process_time()
        for _ in range(rounds):
            levels, deltas, _records = dexnode_round(make, recorded)
        seconds = time.process_time() - start
        ours[name] = {"seconds": seconds, "levels": levels, "deltas": deltas}
    return ours


def _peer(python: Path, rounds: int, checksums: str) -> dict[str, dict[str, float]]:
    cmd = [str(python), str(REPO / "bench" / "cex_cryptofeed.py"), str(FIXTURES), str(rounds), checksums]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return {doc["exchange"]: doc for doc in map(json.loads, out.splitlines())}


def _json_decode_cost(rounds: int = 20) -> tuple[float, float, float]:
    """µs per frame to decode the Kraken recording as v1 (what cryptofeed reads: arrays of strings; stdlib
    json here, cryptofeed uses yapic.json) and as v2 (what dexnode reads: an object per level, numbers as
    Decimal), v2 both with the stdlib decoder (``parse_float=Decimal``) and with the typed msgspec decoder
    dexnode uses: the two protocol versions cost different amounts before any book work starts."""
    v1 = recording.received(FIXTURES / "kraken" / "KRAKEN.ws.50.0.first500lines")
    v2 = kraken_v2.from_v1(FIXTURES / "kraken" / "KRAKEN.ws.50.0.first500lines").frames
    decoder = json.JSONDecoder(parse_float=Decimal)
    costs = []
    for frames, decode in ((v1, json.loads), (v2, decoder.decode), (v2, kraken._BOOK_DECODER.decode)):
        start = time.process_time()
        for _ in range(rounds):
            for frame in frames:
                decode(frame)
        costs.append((time.process_time() - start) / rounds / len(frames) * 1e6)
    return costs[0], costs[1], costs[2]


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--no-peer", action="store_true")
    parser.add_argument("--repeat", type=int, default=5, help="alternate both sides N times: median ratio")
    args = parser.parse_args()

    frames = _frames()
    python = None if args.no_peer else ensure_peer()
    runs: list[tuple[dict[str, dict[str, float]], dict[str, dict[str, float]], dict[str, dict[str, float]]]]
    runs = []
    for _ in range(args.repeat):  # alternated: a shared machine's load hits both sides of one ratio alike
        ours = _ours(frames, args.rounds)
        peer_on = _peer(python, args.rounds, "1") if python else {}
        peer_off = _peer(python, args.rounds, "0") if python else {}
        runs.append((ours, peer_on, peer_off))

    print(
        f"\nCEX parse + normalise + book apply, {args.rounds} rounds of the recordings, one core (CPU time); "
        f"{args.repeat} alternated runs: medians, ratio range in brackets"
    )
    print(
        f"{'exchange':<9}{'dexnode frames/s':>17}{'deltas/s':>10}{'levels/s':>10}{'cryptofeed':>12}"
        f"{'(no cksum)':>12}{'ratio':>7}  (range)"
    )
    for name, (_make, recorded, _) in frames.items():
        n = len(recorded) * args.rounds
        ours_s = [run[0][name]["seconds"] for run in runs]
        line = (
            f"{name:<9}{median(n / s for s in ours_s):>17,.0f}"
            f"{median(runs[0][0][name]['deltas'] * args.rounds / s for s in ours_s):>10,.0f}"
            f"{median(runs[0][0][name]['levels'] * args.rounds / s for s in ours_s):>10,.0f}"
        )
        if python is not None:
            # same recording, same rounds: the ratio is the peer's CPU time over ours, run by run
            ratios = [run[1][name]["seconds"] / run[0][name]["seconds"] for run in runs]
            peer_fps = median(n / run[1][name]["seconds"] for run in runs)
            peer_off_fps = median(n / run[2][name]["seconds"] for run in runs)
            line += (
                f"{peer_fps:>12,.0f}{peer_off_fps:>12,.0f}{median(ratios):>6.2f}x"
                f"  [{min(ratios):.2f}-{max(ratios):.2f}]"
            )
        print(line)
    v1, v2, v2_typed = _json_decode_cost()
    print(
        f"\nKraken JSON decode alone: v1 frames (cryptofeed reads) {v1:.1f} µs/frame; the same frames as v2 "
        f"(dexnode reads) {v2:.1f} µs/frame with the stdlib decoder, {v2_typed:.1f} µs/frame typed (msgspec, "
        "dexnode's)"
    )
    print(f"memory of one L2 book of 5,000 levels (Decimal keys and sizes): {book_memory() / 1024:,.0f} KiB")
    try:
        from cex._speedups import fast_decimals

        made = "made directly in C" if fast_decimals() else "Decimal(text): the layout check failed"
    except ImportError:
        made = "Decimal(text): cex/_speedups.c not built"
    print(f"Decimals of prices and sizes: {made}")
    print("targets (issue 13): >= 3x cryptofeed; >= 200k book deltas/s end to end on one core")


if __name__ == "__main__":
    main()
