"""How a running service treats slow and half-open clients: open N connections that stall, count those it closes.

    .venv/bin/python bench/slow_clients.py --url http://127.0.0.1:8000 -n 50 --seconds 20

Three kinds of stalled client, N connections each: `silent` (connects, sends nothing), `headers` (sends half
of a request's headers, then nothing) and `body` (sends the headers of a POST /ask with a Content-Length,
then half the body). After `--seconds` it prints, per kind, how many connections the server had closed and
the status line of any answer it sent; a healthy server closes all of them.
"""

from __future__ import annotations

import argparse
import socket
import time
from urllib.parse import urlparse

BODY = b'{"question": "\xe5\xaf\x8c\xe5\xa3\xab\xe5\xb1\xb1\xe3\x81\xae\xe6\xa8\x99\xe9\xab\x98\xe3\x81\xaf\xef\xbc\x9f"}'
STALLS = {
    "silent": b"",
    "headers": b"POST /ask HTTP/1.1\r\nHost: localhost\r\nContent-Type: applica",
    "body": (b"POST /ask HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
             b"Content-Length: %d\r\n\r\n" % len(BODY)) + BODY[: len(BODY) // 2],
}


def stall(host: str, port: int, count: int, seconds: float) -> dict[str, tuple[int, set[str]]]:
    """kind -> (connections the server closed, status lines it answered with)."""
    connections = {kind: [] for kind in STALLS}
    for kind, data in STALLS.items():
        for _ in range(count):
            sock = socket.create_connection((host, port), timeout=5)
            if data:
                sock.sendall(data)
            connections[kind].append(sock)
    time.sleep(seconds)
    results = {}
    for kind, socks in connections.items():
        closed, statuses = 0, set()
        for sock in socks:
            sock.setblocking(False)
            received = b""
            try:
                while chunk := sock.recv(65536):
                    received += chunk
                closed += 1  # recv returned b"": the server closed its side
            except BlockingIOError:
                pass  # still open, nothing (more) to read
            except ConnectionResetError:
                closed += 1
            if received:
                statuses.add(received.split(b"\r\n", 1)[0].decode("latin-1"))
            sock.close()
        results[kind] = (closed, statuses)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("-n", type=int, default=50, help="connections of each kind")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long they stall before counting")
    args = parser.parse_args()
    url = urlparse(args.url)
    for kind, (closed, statuses) in stall(url.hostname, url.port or 80, args.n, args.seconds).items():
        answered = f", answered {', '.join(sorted(statuses))}" if statuses else ""
        print(f"{kind:8} {closed}/{args.n} closed by the server after {args.seconds:g} s{answered}")


if __name__ == "__main__":
    main()
