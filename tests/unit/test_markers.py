"""The test-kind rule (``tests/markers.py``) refuses what it must: a session with an unmarked test, one
marked both ways, a unit test using a real component, or a test marked for the other folder stops
before any test runs; well-marked tests run, and a unit test that connects to Postgres fails. Checked
on generated test files with pytest's own ``pytester``."""

from __future__ import annotations

import pytest

pytestmark = [pytest.mark.unit, pytest.mark.filterwarnings("ignore::pytest.PytestAssertRewriteWarning")]

INI = """
[pytest]
markers =
    unit: pure
    integration: real
addopts = -p tests.markers -p no:cacheprovider --strict-markers
"""

CONFTEST = """
import pytest

@pytest.fixture
def clean_db():
    raise AssertionError("a real component started")

@pytest.fixture
def uses_db(clean_db):
    return clean_db
"""


def _session(pytester: pytest.Pytester, modules: dict[str, str]) -> pytest.RunResult:
    """One pytest session over ``modules`` (path -> source), with the rule loaded."""
    pytester.makeini(INI)
    pytester.makeconftest(CONFTEST)
    for path, body in modules.items():
        (pytester.path / path).parent.mkdir(exist_ok=True)
        (pytester.path / path).write_text(body)
    return pytester.runpytest_inprocess("-p", "no:asyncio", "-p", "no:hypothesispytest")


def module(marks: str, test: str = "def test_a():\n    pass\n") -> str:
    return f"import asyncpg, pytest\n{marks}\n{test}"


def test_each_breach_stops_the_session_before_any_test_runs(pytester: pytest.Pytester) -> None:
    result = _session(
        pytester,
        {
            "unit/test_unmarked.py": module(""),
            "integration/test_both.py": module("pytestmark = [pytest.mark.unit, pytest.mark.integration]"),
            "unit/test_real.py": module("pytestmark = pytest.mark.unit", "def test_a(uses_db):\n    pass\n"),
            "unit/test_elsewhere.py": module("pytestmark = pytest.mark.integration"),
            "unit/test_fine.py": module("pytestmark = pytest.mark.unit"),
        },
    )
    assert result.ret == pytest.ExitCode.USAGE_ERROR
    result.assert_outcomes()  # nothing ran
    result.stderr.fnmatch_lines(
        [
            "*test kind markers:",
            "*integration/test_both.py::test_a: marked integration and unit; mark it unit or integration*",
            "*unit/test_elsewhere.py::test_a: marked integration but lives in tests/unit/",
            "*unit/test_real.py::test_a: marked unit but uses clean_db (a real component): mark it integrat*",
            "*unit/test_unmarked.py::test_a: marked neither; mark it unit or integration (pytestmark)",
        ],
        consecutive=False,
    )
    assert "test_fine" not in result.stderr.str()


def test_well_marked_tests_run_and_a_unit_test_cannot_reach_postgres(pytester: pytest.Pytester) -> None:
    connects = "def test_b():\n    asyncpg.connect('postgresql://127.0.0.1:1/x')\n"
    result = _session(
        pytester,
        {
            "unit/test_fine.py": module(
                "pytestmark = pytest.mark.unit", "def test_a():\n    pass\n" + connects
            ),
            "integration/test_real.py": module(
                "pytestmark = pytest.mark.integration", "def test_a(uses_db):\n    pass\n"
            ),
        },
    )
    result.assert_outcomes(passed=1, failed=1, errors=1)  # the integration test ran (its fixture raised)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: a real component started*",
            "*AssertionError: a unit test connected to Postgres: mark it integration*",
        ],
        consecutive=False,
    )
