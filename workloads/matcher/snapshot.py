"""Snapshots of the engine's state, written atomically and verified on load.

File `<seq, 20 digits>.snap`: a header (magic, format version, seq, state hash, CRC-32 of
the body) and the msgpack body. Written to a temporary file, fsynced, renamed into place,
then the directory is fsynced, so a crash leaves either the old or the new snapshot,
never half of one. Loading takes the newest snapshot whose CRC checks out.
"""

from __future__ import annotations

import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from workloads.matcher.wal import fsync_dir

MAGIC = b"XSNP"
VERSION = 1
HEADER = struct.Struct("<4sIQqI")
SUFFIX = ".snap"


@dataclass(frozen=True, slots=True)
class Snapshot:
    seq: int
    state_hash: int
    state: dict[str, Any]
    path: Path


def write(directory: Path, seq: int, state_hash: int, state: dict[str, Any], keep: int = 2) -> Path:
    """Write and publish a snapshot in one go."""
    temporary = temporary_path(directory, seq)
    write_file(temporary, seq, state_hash, state)
    return publish(temporary, keep)


def temporary_path(directory: Path, seq: int) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    return directory / f"{seq:020d}.tmp"


def write_file(path: Path, seq: int, state_hash: int, state: dict[str, Any]) -> None:
    """The snapshot's bytes, fsynced, under a temporary name (not yet visible to recovery)."""
    body = msgspec.msgpack.encode(state)
    header = HEADER.pack(MAGIC, VERSION, seq, state_hash, zlib.crc32(body))
    with open(path, "wb") as handle:
        handle.write(header)
        handle.write(body)
        handle.flush()
        os.fsync(handle.fileno())


def publish(temporary: Path, keep: int = 2) -> Path:
    """Rename a written snapshot into place, fsync the directory, drop the oldest ones."""
    final = temporary.with_suffix(SUFFIX)
    os.replace(temporary, final)
    fsync_dir(final.parent)
    for old in sorted(final.parent.glob(f"*{SUFFIX}"))[:-keep]:
        old.unlink()
    return final


def latest_path(directory: Path) -> Path | None:
    """The newest published snapshot file (not verified: see `load_latest`)."""
    if not directory.exists():
        return None
    files = sorted(directory.glob(f"*{SUFFIX}"))
    return files[-1] if files else None


def header(path: Path) -> tuple[int, int]:
    """(seq, state hash) from a snapshot file's header."""
    with open(path, "rb") as handle:
        _magic, _version, seq, state_hash, _crc = HEADER.unpack(handle.read(HEADER.size))
    return seq, state_hash


def parse(data: bytes, path: Path) -> Snapshot | None:
    """A snapshot from its file's bytes; None when damaged."""
    if len(data) < HEADER.size:
        return None
    magic, version, seq, state_hash, crc = HEADER.unpack_from(data)
    body = data[HEADER.size :]
    if magic != MAGIC or version != VERSION or zlib.crc32(body) != crc:
        return None
    return Snapshot(seq, state_hash, msgspec.msgpack.decode(body), path)


def load_latest(directory: Path) -> Snapshot | None:
    """The newest snapshot that is intact; damaged ones are skipped (older ones remain)."""
    if not directory.exists():
        return None
    for path in sorted(directory.glob(f"*{SUFFIX}"), reverse=True):
        found = parse(path.read_bytes(), path)
        if found is not None:
            return found
    return None
