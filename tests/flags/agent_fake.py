"""A stand-in for the AppConfig Agent's local HTTP API on 127.0.0.1, following its documented contract.

``GET /applications/{app}/environments/{env}/configurations/{profile}[?flag=KEY]``: 404 until a
version is deployed; then 200 with ``Configuration-Version`` and ``Content-Type: application/json``,
the whole profile in the values form, or with ``?flag=KEY`` the flag object itself (``{"enabled":
false}`` when switched off: attributes are dropped). A bearer token is required when one is set.
``misbehave`` switches one failure mode on: ``status`` (an error code), ``slow_headers`` (seconds
before answering), ``drip`` (seconds between body bytes), ``truncate`` (declare more body than
sent, then hang up), ``content_type``, ``version_header`` (its name, or None to leave it out),
``body`` (raw bytes to answer with).
"""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit


class FakeAgent:
    """The agent's HTTP contract over a real socket; records every request it received."""

    def __init__(
        self,
        application: str = "cutover",
        environment: str = "prod",
        profile: str = "migration-flags",
        port: int = 0,
    ):
        self.key = (application, environment, profile)
        self.values: dict[str, Any] | None = None
        self.version = 0
        self.token: str | None = None
        self.misbehave: dict[str, Any] = {}
        self.requests: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self._connections: list[Any] = []
        agent = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()
                with agent._lock:
                    agent._connections.append(self.connection)

            def do_GET(self) -> None:
                agent._answer(self)

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self._thread.start()

    def deploy(self, enabled: bool, tenant_ids: list[Any] | None = None, **other_flags: Any) -> int:
        """Deploy a new version of the profile (values form): the agent serves it from now on."""
        with self._lock:
            flag: dict[str, Any] = {"enabled": enabled}
            if tenant_ids is not None:
                flag["tenant_ids"] = tenant_ids
            self.values = {"migrated_tenants": flag, **other_flags}
            self.version += 1
            return self.version

    def stop(self) -> None:
        """Stop listening and drop every open connection, as a sidecar that exits does."""
        self.server.shutdown()
        self.server.server_close()
        with self._lock:
            for conn in self._connections:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
            self._connections.clear()

    def _answer(self, h: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(h.path)
        query = parse_qs(parts.query)
        with self._lock:
            self.requests.append({"path": unquote(parts.path), "query": query, "headers": dict(h.headers)})
            values, version, mode = self.values, self.version, dict(self.misbehave)
        if mode.get("slow_headers"):
            time.sleep(mode["slow_headers"])
        if "status" in mode:
            return self._send(h, mode["status"], b"InternalServerException: simulated", "application/text")
        if self.token is not None and h.headers.get("Authorization") != f"Bearer {self.token}":
            return self._send(h, 401, b"Unauthorized", "application/text")
        app, env, profile = self.key
        if unquote(parts.path) != f"/applications/{app}/environments/{env}/configurations/{profile}":
            return self._send(h, 404, b"ResourceNotFoundException: no such configuration", "application/text")
        if values is None:
            return self._send(
                h, 404, b"ResourceNotFoundException: configuration not deployed", "application/text"
            )
        flags = query.get("flag", [])
        if flags:
            if len(flags) == 1:
                doc: Any = self._retrieval(values.get(flags[0]))
            else:
                doc = {k: self._retrieval(values.get(k)) for k in flags}
        else:
            doc = {k: self._retrieval(v) for k, v in values.items()}
        body = mode.get("body", json.dumps(doc).encode())
        headers = {}
        header = mode.get("version_header", "Configuration-Version")
        if header:
            headers[header] = str(version)
        self._send(
            h,
            200,
            body,
            mode.get("content_type", "application/json"),
            headers,
            drip=mode.get("drip"),
            truncate=mode.get("truncate", False),
        )
        return None

    @staticmethod
    def _retrieval(flag: Any) -> Any:
        # Retrieval form: a switched-off flag loses its attributes.
        if isinstance(flag, dict) and flag.get("enabled") is False:
            return {"enabled": False}
        return flag

    @staticmethod
    def _send(
        h: BaseHTTPRequestHandler,
        status: int,
        body: bytes,
        content_type: str,
        headers: dict[str, str] | None = None,
        *,
        drip: float | None = None,
        truncate: bool = False,
    ) -> None:
        h.send_response(status)
        h.send_header("Content-Type", content_type)
        h.send_header("Content-Length", str(len(body) * (4 if truncate else 1)))
        for name, value in (headers or {}).items():
            h.send_header(name, value)
        h.end_headers()
        try:
            if drip:
                for i in range(len(body)):
                    h.wfile.write(body[i : i + 1])
                    h.wfile.flush()
                    time.sleep(drip)
            else:
                h.wfile.write(body)
                h.wfile.flush()
            if truncate:
                h.close_connection = True
        except (BrokenPipeError, ConnectionResetError):
            h.close_connection = True
