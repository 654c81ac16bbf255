"""Reads cryptofeed's raw recordings (format: ``../shared/fixtures/cex/PROVENANCE.md``).

Lines: ``<wss-url> <-> <ts>`` (connection opened), ``<wss-url> <- <ts>: <payload>`` (sent by the client),
``<https-url> -> <ts>: <body>`` (a REST response), ``<ts>: <payload>`` (a received frame),
``configuration: <json>``. A line splits at the first ``": "`` only; blank lines are skipped.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

FIXTURES = Path(__file__).resolve().parents[2].parent / "shared" / "fixtures" / "cex"


@dataclass(frozen=True, slots=True)
class Line:
    kind: str  # received | sent | rest | opened | configuration
    url: str | None
    timestamp: float | None
    payload: str


def read(path: Path) -> Iterator[Line]:
    with path.open(encoding="utf-8") as lines:
        for raw in lines:
            line = raw.rstrip("\n")
            if not line.strip():
                continue
            if line.startswith("configuration: "):
                yield Line("configuration", None, None, line.split(": ", 1)[1])
                continue
            head, sep, payload = line.partition(": ")
            if line.startswith(("wss://", "ws://", "https://", "http://")):
                parts = head.split(" ")
                if len(parts) == 3 and parts[1] == "<->" and not sep:
                    yield Line("opened", parts[0], float(parts[2]), "")
                elif parts[1] == "<-":
                    yield Line("sent", parts[0], float(parts[2]), payload)
                elif parts[1] == "->":
                    yield Line("rest", parts[0], float(parts[2]), payload)
                else:
                    raise ValueError(f"{path.name}: unrecognised line {line[:80]!r}")
                continue
            if not sep:
                raise ValueError(f"{path.name}: unrecognised line {line[:80]!r}")
            yield Line("received", None, float(head), payload)


def received(path: Path) -> list[str]:
    """The frames the client received, in order."""
    return [line.payload for line in read(path) if line.kind == "received"]


def rest(path: Path) -> list[tuple[str, str]]:
    """(url, body) of every recorded REST response."""
    return [(line.url or "", line.payload) for line in read(path) if line.kind == "rest"]
