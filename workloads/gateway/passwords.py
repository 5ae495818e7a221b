"""Password hashing with Argon2id (argon2-cffi, the reference implementation's bindings).

Argon2id won the Password Hashing Competition and is the first choice of OWASP's
password storage guidance; it is memory-hard, so GPU guessing is expensive. Hashing takes
tens of milliseconds of CPU by design, so it runs in a worker thread (never on the event
loop), and at most two at once, so a login burst cannot exhaust memory.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()  # argon2id, RFC 9106 "low memory" profile: t=3, m=64 MiB, p=4
# A hash of a random password: verifying an unknown email costs as much as a known one,
# so response time does not reveal which emails have accounts.
_DUMMY = _HASHER.hash("not a password of anyone")


class Passwords:
    """Hash and verify in worker threads, at most `parallel` at once (made per app)."""

    def __init__(self, parallel: int = 2) -> None:
        self._slots = asyncio.Semaphore(parallel)

    async def hash(self, password: str) -> str:
        async with self._slots:
            return await asyncio.to_thread(_HASHER.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        async with self._slots:
            ok = await asyncio.to_thread(_verify, stored or _DUMMY, password)
        return ok and stored is not None


def _verify(stored: str, password: str) -> bool:
    try:
        return _HASHER.verify(stored, password)
    except (VerificationError, InvalidHashError):
        return False
