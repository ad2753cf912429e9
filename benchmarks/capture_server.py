"""The capture server as the benchmarks use it: TCP_NODELAY and a Google OAuth token.

``truecount.capture.CaptureServer`` writes the status line and headers and the
body in separate ``send`` calls; with Nagle's algorithm on, the second waits
for the client's delayed ACK, and every captured request takes ~40 ms on
Linux. Real platform endpoints do not behave like that, so the benchmarks turn
Nagle off on the server's connections (``disable_nagle_algorithm``, a
``socketserver.StreamRequestHandler`` option) and answer like the platforms
(:func:`benchmarks.common.script_platform_answers`).

As a process: ``python -m benchmarks.capture_server --port N``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from benchmarks import common


def tune(capture: Any) -> Any:
    """Disable Nagle on ``capture``'s connections; answer like the platforms."""
    capture._server.RequestHandlerClass.disable_nagle_algorithm = True
    common.script_platform_answers(capture)
    return capture


def main(argv: list[str] | None = None) -> int:
    """Run a tuned capture server until interrupted."""
    from truecount.capture import CaptureServer

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    server = tune(CaptureServer(port=args.port))
    with contextlib.suppress(KeyboardInterrupt):
        server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
