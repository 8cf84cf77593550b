"""An OTLP/HTTP sink for the tracing-on run of `python -m bench.gateway`: it accepts every export
(``POST /v1/traces``) and discards it, answering 200 with an empty ``ExportTraceServiceResponse``
(zero bytes is that message's encoding), as a collector that keeps up would. ``GET /`` answers 200
for the benchmark's readiness check. Nothing is decoded: its CPU is what any collector would spend
receiving, and it is measured apart from Sentinel's.

    python -m bench.gateway.otlp_sink --port 4318
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from aiohttp import web


async def accept(request: web.Request) -> web.Response:
    await request.read()
    return web.Response(body=b"", content_type="application/x-protobuf")


async def ready(request: web.Request) -> web.Response:
    return web.Response(text="ok")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.gateway.otlp_sink", description=__doc__.split("\n\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    app = web.Application()
    app.router.add_post("/v1/traces", accept)
    app.router.add_get("/", ready)
    web.run_app(app, host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
