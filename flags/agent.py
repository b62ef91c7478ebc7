"""The AppConfig Agent flag source: the agent's local HTTP API, read the way AWS documents it.

``GET {agent}/applications/{app}/environments/{env}/configurations/{profile}?flag={key}`` answers
the flag object itself (``{"enabled": true, "tenant_ids": […]}``, or ``{"enabled": false}`` when
switched off) with the version in ``Configuration-Version``. One request per fetch, on one pooled
client, bounded in time as a whole (a body that trickles in is cut off, not waited for). Errors
are typed: nothing deployed yet, agent not up, agent error → ``FlagUnavailableError`` (the last
good flag stays in force); a body that is not a valid flag → ``FlagInvalidError``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import quote

import httpx

from controller.core.errors import FlagInvalidError, FlagNotDeployedError, FlagUnavailableError
from flags.document import MAX_DOCUMENT_BYTES, parse_flag
from flags.snapshot import FlagSnapshot

# The agent has answered with these content types for feature flags (JSON hosted data; the
# Lambda flavour's OpenAPI spec says octet-stream); anything else is not a flag document.
_JSON_TYPES = ("application/json", "application/octet-stream", "text/json")
_VERSION_HEADERS = ("Configuration-Version", "ConfigurationVersion")


def _one_line(text: str, limit: int = 160) -> str:
    return " ".join(text.split())[:limit]


class AgentFlagSource:
    """Reads the migration flag from the AppConfig Agent sidecar."""

    name = "agent"

    def __init__(
        self,
        base_url: str,
        application: str,
        environment: str,
        profile: str,
        flag_key: str,
        clock: Callable[[], float],
        *,
        token: str | None = None,
        connect_timeout: float = 1.0,
        read_timeout: float = 2.0,
        startup_seconds: float = 15.0,
        transport: httpx.BaseTransport | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.flag_key = flag_key
        self.url = (
            f"{base_url.rstrip('/')}/applications/{quote(application, safe='')}"
            f"/environments/{quote(environment, safe='')}/configurations/{quote(profile, safe='')}"
        )
        self._clock = clock
        self._deadline = connect_timeout + read_timeout
        self._startup_seconds = startup_seconds
        self._monotonic = monotonic
        self._sleep = sleep
        self._first_try: float | None = None
        self._answered = False
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._client = httpx.Client(
            headers=headers,
            timeout=httpx.Timeout(
                connect=connect_timeout, read=read_timeout, write=read_timeout, pool=read_timeout
            ),
            limits=httpx.Limits(max_connections=1, max_keepalive_connections=1),
            # The agent is a local sidecar: never route it through a proxy from the environment.
            trust_env=False,
            transport=transport,
        )

    def close(self) -> None:
        """Release the pooled connection."""
        self._client.close()

    def fetch(self) -> FlagSnapshot:
        """One request to the agent; refused connections are retried only while it starts up."""
        now = self._monotonic()
        if self._first_try is None:
            self._first_try = now
        delay = 0.1
        while True:
            try:
                return self._request()
            except httpx.ConnectError as exc:
                # Connection refused: nothing reached the agent. Its sidecar takes seconds to listen
                # after the task starts; until it has answered once, wait for it within the budget.
                left = self._first_try + self._startup_seconds - self._monotonic()
                if self._answered or left <= 0:
                    raise FlagUnavailableError(
                        f"AppConfig Agent at {self.url} is not up (connection refused: {exc})"
                    ) from exc
                self._sleep(min(delay, left))
                delay = min(delay * 2, 1.0)

    def _request(self) -> FlagSnapshot:
        started = self._monotonic()
        try:
            with self._client.stream("GET", self.url, params={"flag": self.flag_key}) as response:
                self._answered = True
                body = self._read(response, started)
        except httpx.ConnectError:
            raise
        except httpx.TimeoutException as exc:
            raise FlagUnavailableError(
                f"AppConfig Agent at {self.url} did not answer within {self._deadline:g}s "
                f"({type(exc).__name__})"
            ) from exc
        except httpx.HTTPError as exc:
            raise FlagUnavailableError(
                f"AppConfig Agent at {self.url}: the answer broke off "
                f"({_one_line(str(exc)) or type(exc).__name__})"
            ) from exc
        status = response.status_code
        if status == 404:
            raise FlagNotDeployedError(
                f"AppConfig Agent has no flag {self.flag_key!r} at {self.url} (404: nothing deployed yet, "
                f"or a wrong name): {_one_line(body.decode(errors='replace'))}"
            )
        if status in (401, 403):
            raise FlagUnavailableError(
                f"AppConfig Agent refused the request ({status}): check CUTOVER_AGENT_TOKEN against the "
                "agent's ACCESS_TOKEN"
            )
        if status != 200:
            raise FlagUnavailableError(
                f"AppConfig Agent answered {status} for {self.url}: "
                f"{_one_line(body.decode(errors='replace'))}"
            )
        content_type = response.headers.get("Content-Type", "application/json").split(";")[0].strip().lower()
        if content_type not in _JSON_TYPES:
            raise FlagInvalidError(f"AppConfig Agent answered {content_type!r}, not a JSON flag document")
        if body.strip() in (b"null", b"{}"):
            # What an agent answers for a key the profile does not define is not documented;
            # an empty answer means the flag is missing, which rejects the document.
            raise FlagInvalidError(f"AppConfig Agent answered no flag {self.flag_key!r} at {self.url}")
        version = self._version(response.headers)
        return parse_flag(
            body,
            flag_key=self.flag_key,
            source=self.name,
            fetched_at=self._clock(),
            version=version,
            shape="flag",
            where=f"agent flag {self.flag_key!r}",
        )

    def _read(self, response: httpx.Response, started: float) -> bytes:
        """The whole body, within the request's overall deadline and AppConfig's size limit."""
        chunks: list[bytes] = []
        size = 0
        for chunk in response.iter_bytes():
            size += len(chunk)
            if size > MAX_DOCUMENT_BYTES:
                raise FlagInvalidError(
                    f"AppConfig Agent's answer is over AppConfig's limit of {MAX_DOCUMENT_BYTES} bytes"
                )
            chunks.append(chunk)
            if self._monotonic() - started > self._deadline:
                raise httpx.ReadTimeout("the body kept trickling in past the deadline")
        return b"".join(chunks)

    @staticmethod
    def _version(headers: httpx.Headers) -> str | None:
        for name in _VERSION_HEADERS:
            value = str(headers.get(name, "")).strip()
            if value and len(value) <= 128 and value.isprintable():
                return value
        return None
