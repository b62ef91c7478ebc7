"""Where a command run on this machine looks for the service's state, and asking the running
service instead.

Read and operate commands never create a ledger or a flag store: a relative default such as
``./cutover.db`` names a different (empty) ledger in every folder, so a command that found none
says where it looked and how to point it elsewhere instead of answering for an empty one. With
``--url`` (or ``CUTOVER_URL``) the same commands ask the running service over its HTTP API.
Must not hold business rules: it finds things and carries answers.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from controller.core.errors import ConfigError, ConflictError, CutoverError, InputError, NotFoundError
from controller.core.ports import Ledger
from controller.settings import Settings

URL_ENV = "CUTOVER_URL"
TOKEN_ENV = "CUTOVER_API_TOKEN"  # noqa: S105 - the variable's name, not a token
POINT_ELSEWHERE = (
    "set CUTOVER_LEDGER=sqlite:///ABSOLUTE/PATH to the service's ledger, "
    f"or ask the running service with --url URL (or {URL_ENV})"
)


def resolved(path: Path) -> str:
    """A path as the process sees it: absolute, so an operator sees which folder it means."""
    return str(path.expanduser().resolve())


def open_ledger(cfg: Settings) -> Ledger:
    """The ledger ``CUTOVER_LEDGER`` names, only if it exists: never a new, empty one."""
    from controller.bootstrap import make_ledger

    path = cfg.sqlite_path
    if path is not None and not path.is_file():
        raise ConfigError(f"no ledger at {resolved(path)} (CUTOVER_LEDGER={cfg.ledger}): {POINT_ELSEWHERE}")
    return make_ledger(cfg)


def missing_flag_file(cfg: Settings) -> str | None:
    """A warning when the file flag source has no file where it looks, else None."""
    if cfg.flag_source != "file" or cfg.flag_file.exists():
        return None
    return (
        f"no flag file at {resolved(cfg.flag_file)} (CUTOVER_FLAG_FILE): answering from the "
        "ledger's last good flag; set CUTOVER_FLAG_FILE, or ask the running service with --url"
    )


def _problem(answer: Any) -> str:
    try:
        doc = answer.json()
    except ValueError:
        return str(answer.reason_phrase)
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        return str(doc["error"].get("message", answer.reason_phrase))
    return str(answer.reason_phrase)


def ask(url: str, method: str, path: str, *, params: dict[str, Any] | None = None) -> Any:
    """One request to the running service at ``url``; its JSON answer, or a ``CutoverError`` that
    says what the service answered. A mutating request carries ``CUTOVER_API_TOKEN`` when set."""
    import httpx

    headers = {}
    token = os.environ.get(TOKEN_ENV)
    if method != "GET" and token:
        headers["Authorization"] = f"Bearer {token}"
    target = url.rstrip("/") + path
    try:
        answer = httpx.request(method, target, params=params, headers=headers, timeout=10)
    except httpx.HTTPError as exc:
        raise InputError(f"cannot reach the service at {url}: {exc}") from exc
    if answer.status_code < 300:
        try:
            return answer.json()
        except ValueError as exc:
            raise InputError(f"{target} did not answer JSON") from exc
    problem = f"{url} answered {answer.status_code}: {_problem(answer)}"
    if answer.status_code == 401:
        problem += f" (set {TOKEN_ENV} to the service's token)"
    raise {404: NotFoundError, 409: ConflictError, 422: InputError}.get(answer.status_code, CutoverError)(
        problem
    )
