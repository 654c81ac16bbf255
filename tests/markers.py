"""The test-kind rule, checked at collection (a pytest plugin loaded by ``tests/conftest.py``).

Every test is marked ``unit`` (pure code on recorded or synthetic inputs: no Postgres, no anvil, no
broker, no subprocess) or ``integration`` (real components), never both nor neither; a module under
``tests/unit/`` is unit and one under ``tests/integration/`` is integration. A unit test that requests
a fixture which starts a real component (directly or through another fixture) is mis-marked. Any
breach stops the session before a test runs, so ``make unit`` stays the fast loop and a green
``-m integration`` run cannot silently miss a test.

At run time the same fixtures refuse a unit test, and ``asyncpg.connect``/``create_pool`` raise inside
one, for a unit test that reaches Postgres by another road.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

KINDS = ("unit", "integration")

# fixtures that start (or need) a real component: Postgres, anvil, the devnet, the CLI in a subprocess
REAL_COMPONENT_FIXTURES = frozenset(
    {
        "pg_server",
        "database",
        "migrated_db",
        "scratch_db",
        "clean_db",
        "anvil",
        "anvil_process",
        "devnet",
        "devnet_factory",
        "fresh_devnet",
        "cli_env",
    }
)


def _kinds(item: pytest.Item) -> set[str]:
    return {m.name for m in item.iter_markers() if m.name in KINDS}


def marker_problems(items: Iterable[pytest.Item]) -> list[str]:
    """What is wrong with the kind markers of ``items``, one line per test (empty: nothing)."""
    problems = []
    for item in items:
        kinds = _kinds(item)
        folder = Path(str(item.path)).parent.name
        if len(kinds) != 1:
            got = " and ".join(sorted(kinds)) or "neither"
            problems.append(f"{item.nodeid}: marked {got}; mark it unit or integration (pytestmark)")
            continue
        (kind,) = kinds
        if folder in KINDS and folder != kind:
            problems.append(f"{item.nodeid}: marked {kind} but lives in tests/{folder}/")
        if kind == "unit":
            real = sorted(REAL_COMPONENT_FIXTURES.intersection(getattr(item, "fixturenames", ())))
            if real:
                problems.append(
                    f"{item.nodeid}: marked unit but uses {', '.join(real)} (a real component): "
                    "mark it integration"
                )
    return problems


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    problems = marker_problems(items)
    if problems:
        raise pytest.UsageError("test kind markers:\n  " + "\n  ".join(problems))


def refuse_in_unit_test(request: pytest.FixtureRequest, what: str) -> None:
    """Called by the fixtures that start a real component: a unit test asking for one fails."""
    item = getattr(request, "_pyfuncitem", None)
    if item is not None and "unit" in _kinds(item):
        pytest.fail(f"{item.nodeid} is marked unit but starts {what}", pytrace=False)


def _refused(*_: object, **__: object) -> None:
    raise AssertionError("a unit test connected to Postgres: mark it integration")


@pytest.fixture(autouse=True)
def _no_postgres_in_unit_tests(request: pytest.FixtureRequest) -> Iterator[None]:
    if "unit" not in _kinds(request.node):
        yield
        return
    import asyncpg

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(asyncpg, "connect", _refused)
        patch.setattr(asyncpg, "create_pool", _refused)
        yield
