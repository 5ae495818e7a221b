"""Reading a process's settings from environment variables: one error type that names the
variable, and the checks every service needs."""

from __future__ import annotations

from collections.abc import Mapping


class SettingsError(ValueError):
    """A setting is invalid; the message names the variable."""


def integer(env: Mapping[str, str], name: str, default: int, low: int = 0) -> int:
    """`name` as an integer of at least `low`; `default` when unset."""
    raw = env.get(name, str(default)).strip()
    try:
        value = int(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not an integer") from None
    if value < low:
        raise SettingsError(f"{name}={value} must be at least {low}")
    return value
