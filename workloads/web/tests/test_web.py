"""The web UI's own tests (vitest) pass, and its generated API types are current."""

import pytest

from e2e.env import web

pytestmark = pytest.mark.integration  # runs Node.js


def test_vitest_passes() -> None:
    result = web.vitest()
    assert result.returncode == 0, f"vitest failed:\n{web.tail(result)}"


def test_generated_api_types_are_current() -> None:
    current, message = web.openapi_types_current()
    assert current, f"{message} (the gateway's OpenAPI document changed)"
