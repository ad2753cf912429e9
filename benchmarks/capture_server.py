"""The capture server as the benchmarks use it: answering like the platforms.

``truecount.capture.CaptureServer`` sets TCP_NODELAY on its connections itself
(without it every captured request waited ~40 ms for a delayed ACK); this
module only scripts the platform answers
(:func:`benchmarks.common.script_platform_answers`: a Google OAuth token,
TikTok's ``{"code": 0}`` envelope).

As a process: ``python -m benchmarks.capture_server --port N``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from typing import Any

from benchmarks import common


def tune(capture: Any) -> Any:
    """Make ``capture`` answer like the platforms; returns it."""
    common.script_platform_answers(capture)
    return capture


def main(argv: list[str] | None = None) -> int:
    """Run a capture server answering like the platforms until interrupted."""
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
