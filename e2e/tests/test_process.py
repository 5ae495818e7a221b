"""`make down`'s stop of recorded processes, also while their launcher stops them too."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from e2e.env.process import stop_from_pid_files

pytestmark = pytest.mark.unit


def test_pid_files_that_vanish_or_hold_no_pid_are_skipped(tmp_path: Path) -> None:
    (tmp_path / "a-garbage.pid").write_text("not a pid\n")
    # A pid file its launcher removed between the listing and the read (`make up` stopping
    # while `make down` runs): a dangling link is listed and then cannot be read.
    os.symlink(tmp_path / "gone", tmp_path / "b-vanished.pid")
    assert stop_from_pid_files(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b-vanished.pid"]
