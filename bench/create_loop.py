"""Sequential creates from a process that does nothing else (bench/create_call.py's `*_raw`
phases): one keep-alive TLS connection, no client library, no watch threads sharing the GIL.

Reads {"host", "token", "ca", "path", "bodies": [...]} as JSON on stdin; prints the latency
of each POST in seconds as a JSON list.
"""

from __future__ import annotations

import http.client
import json
import ssl
import sys
import time
import urllib.parse


def main() -> None:
    spec = json.load(sys.stdin)
    url = urllib.parse.urlsplit(spec["host"])
    ctx = ssl.create_default_context(cafile=spec["ca"])
    conn = http.client.HTTPSConnection(url.hostname, url.port, context=ctx)
    headers = {
        "Authorization": f"Bearer {spec['token']}",
        "Content-Type": "application/json",
        "Accept": "application/json",
    }
    out = []
    for body in spec["bodies"]:
        data = json.dumps(body)
        t0 = time.perf_counter()
        conn.request("POST", spec["path"], data, headers)
        resp = conn.getresponse()
        payload = resp.read()
        out.append(time.perf_counter() - t0)
        if resp.status != 201:
            raise SystemExit(f"POST {spec['path']}: {resp.status} {payload[:300]!r}")
    print(json.dumps(out))


if __name__ == "__main__":
    main()
