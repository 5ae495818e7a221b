"""Is the matcher's state hash continuous across its restarts? Checked from the outside.

During a drill the matcher's (seq, state hash) is sampled through GetStatus: at the start,
before each kill, after each restart, at the end. A sample counts only when its seq is
durable (`seq == last_durable_seq`): the engine runs ahead of its fsync, and a command that
was never durable (never acknowledged) is rightly gone after a kill -9.

Afterwards a copy of the matcher's data directory is replayed in a separate process
(`python -m e2e.drills.hashchain DIR SEQ...`, with the matcher's environment for its
market spec): `recovery.recover` re-executes every command of the log and checks the hash
it recorded after each one. The hash is continuous when that replay succeeds, every sample
equals the hash the log recorded at its seq (or a snapshot's, at exactly that seq), the
replay ends at the final sample, and the epochs only grow.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpc

from e2e.drills.stackvenue import DrillVenue
from workloads.matcher import codec, recovery, snapshot, wal
from workloads.matcher.spec import MarketSpec


@dataclass(frozen=True)
class Sample:
    label: str
    seq: int
    epoch: int
    state_hash: str


@dataclass
class HashChain:
    samples: list[Sample] = field(default_factory=list)
    missed: list[str] = field(default_factory=list)
    """Labels of samples not taken: the matcher was down or never idle at a durable seq."""

    async def sample(self, venue: DrillVenue, label: str, within: float = 3.0) -> Sample | None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while loop.time() < deadline:
            try:
                status = await venue.status(within=1.0)
            except grpc.aio.AioRpcError:
                await asyncio.sleep(0.1)
                continue
            if status.seq == status.last_durable_seq and status.leader:
                found = Sample(label, status.seq, status.epoch, status.state_hash.hex())
                self.samples.append(found)
                return found
            await asyncio.sleep(0.005)
        self.missed.append(label)
        return None

    async def verify(self, venue: DrillVenue) -> tuple[dict[str, Any], list[str]]:
        """Replay a copy of the matcher's data and hold the samples against it; the
        figures (`hash_continuous`, ...) and the problems found."""
        problems: list[str] = []
        final = await self.sample(venue, "verify", within=10.0)
        with tempfile.TemporaryDirectory(prefix="drill-replay-") as scratch:
            copy = Path(scratch) / "data"
            await asyncio.to_thread(copy_data, venue.matcher.data_dir, copy)
            seqs = sorted({s.seq for s in self.samples})
            done = await asyncio.to_thread(
                subprocess.run,
                [sys.executable, "-m", "e2e.drills.hashchain", str(copy), *map(str, seqs)],
                env=venue.matcher.env(), capture_output=True, text=True, timeout=600,
                check=False,
            )  # fmt: skip
        if done.returncode != 0:
            problems.append(f"the matcher's log does not replay: {done.stderr.strip()[-500:]}")
            return {"hash_continuous": False, "hash_samples": len(self.samples)}, problems
        replay = json.loads(done.stdout)
        known = {**replay["snapshots"], **replay["recorded"]}
        checked = 0
        for s in self.samples:
            recorded = known.get(str(s.seq))
            if recorded is None:
                continue  # before the log's first seq and no snapshot at it (compacted)
            checked += 1
            if recorded != s.state_hash:
                problems.append(f"hash at seq {s.seq} ({s.label}) was {s.state_hash}, "
                                f"the log recorded {recorded}")  # fmt: skip
        if final is None:
            problems.append("no final (seq, hash) sample from the matcher")
        elif (final.seq, final.state_hash) != (replay["seq"], replay["state_hash"]):
            problems.append(f"the replay ends at {replay['seq']}/{replay['state_hash']}, the "
                            f"matcher is at {final.seq}/{final.state_hash}")  # fmt: skip
        epochs = [s.epoch for s in self.samples]
        if epochs != sorted(epochs):
            problems.append(f"epochs went backwards: {epochs}")
        figures = {
            "hash_continuous": not problems,
            "hash_samples": len(self.samples),
            "hash_checked": checked,
            "replayed_commands": replay["replayed"],
        }
        return figures, problems

    def to_json(self) -> list[dict[str, Any]]:
        return [asdict(s) for s in self.samples]


def copy_data(source: Path, target: Path) -> None:
    """Copy the matcher's WAL (and, when the log no longer starts at seq 1, its snapshots)
    into `target`: without snapshots the replay starts from the empty engine."""
    (target / "wal").mkdir(parents=True)
    segments = wal.segments(source / "wal")
    for path in segments:
        shutil.copy2(path, target / "wal" / path.name)
    if (not segments or int(segments[0].stem) > 1) and (source / "snapshots").exists():
        shutil.copytree(source / "snapshots", target / "snapshots", dirs_exist_ok=True)


def replay(directory: Path, wanted: set[int]) -> dict[str, Any]:
    """The replay's figures: the hashes the log recorded at `wanted` seqs, the snapshots'
    hashes, and where a full recovery (every command's hash checked) ends."""
    recorded: dict[str, str] = {}
    segments = wal.segments(directory / "wal")
    for record in wal.read(directory / "wal", min(wanted, default=1)):
        for i, entry in enumerate(record.entries):
            if record.first_seq + i in wanted:
                recorded[str(record.first_seq + i)] = codec.hash_bytes(entry[4]).hex()
    snapshots = {}
    for path in sorted((directory / "snapshots").glob(f"*{snapshot.SUFFIX}")):
        seq, state_hash = snapshot.header(path)
        snapshots[str(seq)] = codec.hash_bytes(state_hash).hex()
    recovered = recovery.recover(MarketSpec.from_env(), directory)
    return {
        "first_wal_seq": int(segments[0].stem) if segments else 0,
        "seq": recovered.engine.seq,
        "state_hash": codec.hash_bytes(recovered.engine.state_hash).hex(),
        "snapshot_seq": recovered.snapshot_seq,
        "replayed": recovered.replayed,
        "recorded": recorded,
        "snapshots": snapshots,
    }


if __name__ == "__main__":
    print(json.dumps(replay(Path(sys.argv[1]), {int(s) for s in sys.argv[2:]})))
