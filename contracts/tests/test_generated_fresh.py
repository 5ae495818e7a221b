"""The committed generated code matches what `make proto` produces from the .proto files."""

from pathlib import Path

import pytest

from contracts import generate

pytestmark = pytest.mark.unit


def test_generated_code_is_not_stale(tmp_path: Path) -> None:
    generate.generate(tmp_path)
    fresh = sorted((tmp_path / "contracts" / "v1").iterdir())
    assert fresh, "protoc produced nothing"
    stale = []
    for produced in fresh:
        committed = generate.PROTO_DIR / produced.name
        if not committed.exists() or committed.read_bytes() != produced.read_bytes():
            stale.append(produced.name)
    assert not stale, f"run `make proto`: stale generated files {stale}"
