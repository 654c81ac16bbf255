"""Block ranges for the backfill: what is done, what is missing, how it is cut into chunks. Pure.

A range is inclusive at both ends (``BlockRange(0, 99)`` is 100 blocks), like ``--from``/``--to``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import pairwise


@dataclass(frozen=True, order=True, slots=True)
class BlockRange:
    first: int
    last: int

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError(f"empty block range {self.first}..{self.last}")

    def __len__(self) -> int:
        return self.last - self.first + 1

    def __str__(self) -> str:
        return f"{self.first}–{self.last}" if self.last != self.first else str(self.first)

    @property
    def numbers(self) -> range:
        return range(self.first, self.last + 1)


def merge(ranges: Iterable[BlockRange]) -> list[BlockRange]:
    """The union, as sorted disjoint ranges; touching ranges (0–9, 10–19) become one."""
    out: list[BlockRange] = []
    for r in sorted(ranges):
        if out and r.first <= out[-1].last + 1:
            if r.last > out[-1].last:
                out[-1] = BlockRange(out[-1].first, r.last)
        else:
            out.append(r)
    return out


def missing(wanted: BlockRange, done: Iterable[BlockRange]) -> list[BlockRange]:
    """The parts of ``wanted`` not covered by ``done``, ascending."""
    out: list[BlockRange] = []
    start = wanted.first
    for r in merge(done):
        if r.last < start:
            continue
        if r.first > wanted.last:
            break
        if r.first > start:
            out.append(BlockRange(start, r.first - 1))
        start = r.last + 1
        if start > wanted.last:
            return out
    if start <= wanted.last:
        out.append(BlockRange(start, wanted.last))
    return out


def gaps(done: Sequence[BlockRange]) -> list[BlockRange]:
    """The holes between merged ``done`` ranges."""
    merged = merge(done)
    return [BlockRange(a.last + 1, b.first - 1) for a, b in pairwise(merged)]


def split(ranges: Iterable[BlockRange], size: int) -> list[BlockRange]:
    """Each range cut into chunks of at most ``size`` blocks, in order.

    Chunks end on multiples of ``size`` (block 0–99, 100–199, ...) where the range allows, so runs
    with the same ``size`` cut the same chunks whatever range they were started with.
    """
    if size < 1:
        raise ValueError("chunk size must be at least 1")
    out: list[BlockRange] = []
    for r in ranges:
        first = r.first
        while first <= r.last:
            last = min(r.last, (first // size + 1) * size - 1)
            out.append(BlockRange(first, last))
            first = last + 1
    return out


def plan(wanted: BlockRange, done: Iterable[BlockRange], size: int) -> list[BlockRange]:
    """The chunks still to write for ``wanted``: the missing parts cut into chunks, ascending."""
    return split(missing(wanted, done), size)
