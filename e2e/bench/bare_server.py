"""A bare grpc.aio server: the yardstick `matcher.grpc` measures the matcher against.

`python -m e2e.bench.bare_server <host:port>` serves the Matcher's PlaceOrder and
SubmitBatch with replies that are ready at once: no engine, no WAL, no fsync. The same
load generator against it in the same run shows what the two Python gRPC stacks alone
cost on this machine, as `reference_ops_per_s` does for the engine. Only the benchmark
uses it; it serves until it is terminated.
"""

from __future__ import annotations

import sys
from typing import Any

import grpc
import uvloop

from contracts.v1 import matcher_pb2
from workloads.matcher.service import SERVICE_NAME

_ACCEPTED = matcher_pb2.CommandReply(status=matcher_pb2.COMMAND_STATUS_ACCEPTED).SerializeToString()


async def _place(request: bytes, context: Any) -> bytes:
    return _ACCEPTED


async def _batch(request: bytes, context: Any) -> bytes:
    return b""


async def serve(address: str) -> None:
    server = grpc.aio.server()
    handlers = {
        "PlaceOrder": grpc.unary_unary_rpc_method_handler(_place),
        "SubmitBatch": grpc.unary_unary_rpc_method_handler(_batch),
    }
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE_NAME, handlers),))
    server.add_insecure_port(address)
    await server.start()
    await server.wait_for_termination()


if __name__ == "__main__":
    uvloop.run(serve(sys.argv[1]))  # the matcher's loop: only what the handlers do differs
