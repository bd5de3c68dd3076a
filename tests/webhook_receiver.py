"""A real HTTP server on loopback that receives webhooks and checks their signatures."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class Receiver:
    """Records every delivery; answers ``fail_first`` requests with 500, then 200."""

    def __init__(self, fail_first: int = 0):
        self.secret: str | None = None
        self.fail_first = fail_first
        self.requests: list[dict] = []  # every request, accepted or not
        self.lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                body = self.rfile.read(int(self.headers["content-length"]))
                with receiver.lock:
                    n = len(receiver.requests)
                    receiver.requests.append(
                        {
                            "id": self.headers["webhook-id"],
                            "timestamp": self.headers["webhook-timestamp"],
                            "signature": self.headers["webhook-signature"],
                            "body": body,
                            "valid": receiver.verify(self.headers, body),
                        }
                    )
                code = 500 if n < receiver.fail_first else 200
                with receiver.lock:
                    receiver.requests[n]["answered"] = code
                self.send_response(code)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hooks"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def verify(self, headers, body: bytes) -> bool:
        """The Standard Webhooks check a receiver makes."""
        if self.secret is None:
            return False
        key = base64.b64decode(self.secret.removeprefix("whsec_"))
        signed = f"{headers['webhook-id']}.{headers['webhook-timestamp']}.".encode() + body
        want = base64.b64encode(hmac.new(key, signed, hashlib.sha256).digest()).decode()
        return any(
            hmac.compare_digest(want, sig.split(",", 1)[1])
            for sig in headers["webhook-signature"].split()
        )

    def accepted(self) -> list[dict]:
        """The deliveries answered 200 (parsed), in arrival order."""
        with self.lock:
            done = self.requests[self.fail_first :]
        return [{**r, "payload": json.loads(r["body"])} for r in done]

    def close(self) -> None:
        self.server.shutdown()
