"""The write-ahead log: CRC-framed binary records in rotating segment files.

One record holds one group-commit batch of sequenced commands (with their events), at
most `max_batch` of them; one fsync covers the records of a group, so a torn write can
only ever cut the newest records.

Record layout (little-endian):
    length u32      bytes after this header
    crc    u32      CRC-32 of everything after this field (rest of header + payload)
    first_seq u64   seq of the first command in the batch
    count  u32      commands in the batch
    epoch  u64      fencing epoch the batch was executed under
    state_hash u64  the engine's rolling hash after the last command (recovery checks it)
    payload         msgpack: [[ts, command, events, correlation_id, state_hash], ...],
                    one entry per command; state_hash is the engine's hash after it

Segment files are named `<first seq, 20 digits>.wal` and rotate past `segment_bytes`.
On recovery a torn last record is truncated; a bad record with valid data after it is
corruption, and opening the log fails with the file and offset in the error.
"""

from __future__ import annotations

import itertools
import os
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

HEADER = struct.Struct("<IIQIQQ")
_CRC_FROM = 8  # the CRC covers the header from first_seq on
_PREFIX = struct.Struct("<II")  # length, crc
_TAIL = struct.Struct("<QIQQ")  # first_seq, count, epoch, state_hash
SUFFIX = ".wal"
_U64 = (1 << 64) - 1

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder()


class WalCorruption(RuntimeError):
    """A record in the middle of the log is damaged: refusing to start."""

    def __init__(self, path: Path, offset: int, why: str) -> None:
        super().__init__(f"WAL corruption in {path} at offset {offset}: {why}")
        self.path = path
        self.offset = offset


@dataclass(frozen=True, slots=True)
class Record:
    first_seq: int
    count: int
    epoch: int
    state_hash: int
    entries: list[Any]  # [ts, command, events, correlation_id, state_hash] per command

    @property
    def last_seq(self) -> int:
        return self.first_seq + self.count - 1


def encode(first_seq: int, epoch: int, state_hash: int, entries: Sequence[Any]) -> bytes:
    """One framed record of `entries` (one group commit): a single msgpack encode, and
    the CRC taken over the header's tail and the payload without copying them together."""
    payload = _encoder.encode(entries)
    tail = _TAIL.pack(first_seq, len(entries), epoch, state_hash & _U64)
    crc = zlib.crc32(payload, zlib.crc32(tail))
    return b"".join((_PREFIX.pack(len(payload), crc), tail, payload))


def segment_name(first_seq: int) -> str:
    return f"{first_seq:020d}{SUFFIX}"


def segments(directory: Path) -> list[Path]:
    return sorted(directory.glob(f"*{SUFFIX}"))


def scan(path: Path, data: bytes, *, last_segment: bool) -> Iterator[tuple[int, Record | None]]:
    """Yield (offset, record) for each valid record; (offset, None) marks a torn tail."""
    offset = 0
    size = len(data)
    while offset < size:
        if size - offset < HEADER.size:
            if last_segment:
                yield offset, None
                return
            raise WalCorruption(path, offset, "truncated header in a sealed segment")
        length, crc, first_seq, count, epoch, state_hash = HEADER.unpack_from(data, offset)
        end = offset + HEADER.size + length
        if length == 0 and crc == 0 and not any(data[offset:]):
            yield offset, None  # preallocated zeros: the end of the log
            return
        if end > size or zlib.crc32(data[offset + _CRC_FROM : end]) != crc:
            if last_segment and end >= size:  # the newest record, cut by a crash
                yield offset, None
                return
            raise WalCorruption(path, offset, "CRC mismatch with valid data after it")
        entries = _decoder.decode(data[offset + HEADER.size : end])
        if not isinstance(entries, list) or len(entries) != count:
            raise WalCorruption(path, offset, "payload does not match its header")
        yield offset, Record(first_seq, count, epoch, state_hash, entries)
        offset = end


def whole_records(data: bytes) -> int:
    """Length of the prefix of `data` made of complete records (by their length fields)."""
    end = 0
    while len(data) - end >= HEADER.size:
        following = end + HEADER.size + HEADER.unpack_from(data, end)[0]
        if following > len(data):
            break
        end = following
    return end


def read(directory: Path, from_seq: int = 1, *, repair: bool = False) -> Iterator[Record]:
    """Records that contain commands with seq >= `from_seq`, in order.

    With `repair`, a torn tail of the newest segment is truncated on disk (recovery);
    without, reading just stops there (the outbox tails a log that is still being written).
    """
    files = segments(directory)
    start = 0
    for i, path in enumerate(files):
        if int(path.stem) <= from_seq:
            start = i
    expected = None
    for i, path in enumerate(files[start:], start):
        data = path.read_bytes()
        last = i == len(files) - 1
        for offset, record in scan(path, data, last_segment=last):
            if record is None:
                if repair:
                    with open(path, "r+b") as handle:
                        handle.truncate(offset)
                        os.fsync(handle.fileno())
                return
            if expected is not None and record.first_seq != expected:
                raise WalCorruption(path, offset, f"seq {record.first_seq} follows {expected - 1}")
            expected = record.last_seq + 1
            if record.last_seq >= from_seq:
                yield record


class WalWriter:
    """Appends records to the newest segment; `sync` makes everything written durable."""

    def __init__(self, directory: Path, next_seq: int, segment_bytes: int = 64 << 20) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.segment_bytes = segment_bytes
        existing = segments(directory)
        if existing:
            self.path = existing[-1]
        else:
            self.path = directory / segment_name(next_seq)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = os.fstat(self._fd).st_size
        if not existing:
            fsync_dir(directory)

    def write(self, record: bytes, first_seq: int) -> None:
        """Append one encoded record (not yet durable); rotate first if the segment is full."""
        if self._size and self._size + len(record) > self.segment_bytes:
            os.fsync(self._fd)
            os.close(self._fd)
            self.path = self.directory / segment_name(first_seq)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
            self._size = 0
            fsync_dir(self.directory)
        view = memoryview(record)
        while view:
            written = os.write(self._fd, view)
            view = view[written:]
        self._size += len(record)

    def rotate(self, next_seq: int) -> bool:
        """Seal the current segment when it holds records (the archive takes sealed ones):
        fsync and close it, and open `<next_seq>.wal`, where the next record will start."""
        if self._size == 0:
            return False
        os.fsync(self._fd)
        os.close(self._fd)
        self.path = self.directory / segment_name(next_seq)
        self._fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        self._size = 0
        fsync_dir(self.directory)
        return True

    def sync(self) -> None:
        """Make every record written so far durable. fdatasync suffices for an append-only
        log (it flushes the size with the data) and skips the timestamp updates."""
        os.fdatasync(self._fd)

    def close(self) -> None:
        os.close(self._fd)

    def remove_before(self, seq: int) -> list[Path]:
        """Delete sealed segments whose commands all precede `seq` (kept: the newest one)."""
        files = segments(self.directory)
        removed = []
        for path, following in itertools.pairwise(files):
            if int(following.stem) <= seq and path != self.path:
                path.unlink()
                removed.append(path)
        if removed:
            fsync_dir(self.directory)
        return removed


def fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
