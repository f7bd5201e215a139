"""The load test's floor: the least an ASGI server on this machine costs per request.

Served by the same uvicorn (uvloop, httptools, same worker count) as `audience serve`,
it answers every request with the bytes of one real /recommend answer, read from the
file named by BARE_ASGI_BODY, and does nothing else: no routing, no key check, no
lookup, no logging. `run_load.py` measures it with the same wrk runs as the server, so
the server's figures can be read as ratios to it, which hold when the machine's speed
does not.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

BODY = Path(os.environ["BARE_ASGI_BODY"]).read_bytes()
HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": HEADERS})
    await send({"type": "http.response.body", "body": BODY})
