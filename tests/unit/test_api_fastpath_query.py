"""``api.fastpath._query_pairs``: the query string split as ``parse_qsl(keep_blank_values=True)`` splits
it, the escapes included (empty fields, blank values, ``=`` inside values, ``;``, ``%`` and ``+``)."""

from __future__ import annotations

import random
from urllib.parse import parse_qsl

import pytest

from api.fastpath import _query_pairs

pytestmark = pytest.mark.unit


EDGES = "|a|a=|=a|a=1&b=2|a=1&&b=2|&a=1&|a=b=c|a=1;b=2|a&b|==|a=%41|a=+|a%3D=1|x=1&x=2|é=1|a=%zz|a=%C3%A9"


@pytest.mark.parametrize("text", EDGES.split("|"))
def test_split_as_parse_qsl(text: str) -> None:
    assert _query_pairs(text) == parse_qsl(text, keep_blank_values=True)


def test_random_strings_split_as_parse_qsl() -> None:
    rng = random.Random(7)
    for _ in range(20_000):
        text = "".join(rng.choice("ab=&;%+41 é") for _ in range(rng.randrange(12)))
        assert _query_pairs(text) == parse_qsl(text, keep_blank_values=True), text
