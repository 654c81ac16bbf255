"""The head revision read from the revision files' text (the start-up check that skips Alembic)."""

from __future__ import annotations

from pathlib import Path

import pytest

from migrations import runner

pytestmark = pytest.mark.unit


def test_file_head_is_alembics_head() -> None:
    # Alembic loads every revision module and walks the graph; file_head reads two lines of each file
    assert runner.file_head() == runner.head_revision()


def _revision(path: Path, revision: str, down: str | None, typed: bool = True) -> None:
    down_text = "None" if down is None else f'"{down}"'
    annotation = (": str", ": str | None") if typed else ("", "")
    path.write_text(
        f'"""doc"""\n\nrevision{annotation[0]} = "{revision}"\n'
        f"down_revision{annotation[1]} = {down_text}\n\n\ndef upgrade() -> None:\n    pass\n"
    )


def test_file_head_follows_the_chain_and_refuses_what_it_cannot_read(tmp_path: Path) -> None:
    _revision(tmp_path / "a.py", "0001", None)
    _revision(tmp_path / "b.py", "0002", "0001", typed=False)
    _revision(tmp_path / "c.py", "0003", "0002")
    assert runner.file_head(tmp_path) == "0003"

    _revision(tmp_path / "d.py", "0004", "0002")  # a branch: two heads, Alembic must decide
    assert runner.file_head(tmp_path) is None
    (tmp_path / "d.py").unlink()

    (tmp_path / "e.py").write_text('revision = make_id()\ndown_revision = "0003"\n')  # not plainly stated
    assert runner.file_head(tmp_path) is None
