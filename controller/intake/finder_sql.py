"""A target finder over SQL: a query against the application's database (Aurora PostgreSQL or
MySQL, SQLite, anything SQLAlchemy speaks) whose rows become conversions.

``CUTOVER_FINDER_SQL_URL`` is a SQLAlchemy URL (secret: it may carry a password) and
``CUTOVER_FINDER_SQL_QUERY`` a query with the named parameters ``:watermark`` (the previous run's,
or ``''``) and ``:now`` (epoch seconds of the slot). Each row needs ``conversion_id`` and
``tenant_id`` columns; a ``watermark`` column, if present, advances the watermark to its largest
value (compared as values of the column's type, kept as a string); every other column becomes a
string parameter. Read-only by intent: the finder never commits.

Use it as ``CUTOVER_TARGET_FINDER=controller.finder_sql:find``.
"""

from __future__ import annotations

import datetime as dt
import decimal
import threading
from collections.abc import Callable
from typing import Any

from controller.core.errors import ConfigError
from controller.intake.finder import FinderContext, Found

_ENGINES: dict[str, Any] = {}
_LOCK = threading.Lock()


def _engine(url: str) -> Any:
    from sqlalchemy import create_engine

    with _LOCK:
        if url not in _ENGINES:
            _ENGINES[url] = create_engine(url, pool_pre_ping=True)
        return _ENGINES[url]


def largest(marks: list[Any], watermark: str | None) -> str | None:
    """The largest of ``marks`` and the previous watermark by value (numbers as numbers, times as
    times), kept as a string. Compared as strings, an integer column read in pages of 1,000 would
    stop at ``'999'`` (``'999' > '1000'``) and return the same page for ever."""
    if not marks:
        return watermark
    key = _order(marks)
    best = max(marks, key=key)
    if watermark:
        try:
            if key(watermark) > key(best):
                return watermark
        except (ValueError, TypeError, ArithmeticError):
            pass  # a previous watermark of another kind (the query changed): the rows decide
    return str(best)


def _order(marks: list[Any]) -> Callable[[Any], Any]:
    """How values of the watermark column compare; a stored watermark (a string) is read the same way."""
    if all(isinstance(m, int | float | decimal.Decimal) and not isinstance(m, bool) for m in marks):
        return lambda m: decimal.Decimal(str(m))
    if all(isinstance(m, dt.datetime) for m in marks):
        return lambda m: m if isinstance(m, dt.datetime) else dt.datetime.fromisoformat(str(m))
    if all(isinstance(m, dt.date) and not isinstance(m, dt.datetime) for m in marks):
        return lambda m: m if isinstance(m, dt.date) else dt.date.fromisoformat(str(m))
    return str


def rows_to_found(rows: list[dict[str, Any]], watermark: str | None) -> Found:
    """Map result rows to conversions; the watermark becomes the largest ``watermark`` value seen
    (the query's ``WHERE … > :watermark`` keeps it moving forward)."""
    conversions = []
    marks = [row["watermark"] for row in rows if row.get("watermark") is not None]
    for row in rows:
        params = {
            k: str(v)
            for k, v in row.items()
            if k not in ("conversion_id", "tenant_id", "watermark") and v is not None
        }
        conversions.append(
            {"conversion_id": row.get("conversion_id"), "tenant_id": row.get("tenant_id"), "params": params}
        )
    return Found(conversions, largest(marks, watermark))


def find_with(url: str, query: str, watermark: str | None, now: float) -> Found:
    """Run ``query`` on ``url`` and map its rows."""
    from sqlalchemy import text

    with _engine(url).connect() as connection:
        result = connection.execute(text(query), {"watermark": watermark or "", "now": now})
        rows = [dict(r._mapping) for r in result]
        connection.rollback()
    return rows_to_found(rows, watermark)


def find(context: FinderContext) -> Found:
    """The finder entry point: reads its URL and query from the settings."""
    settings = context.settings
    if settings.finder_sql_url is None or not settings.finder_sql_query:
        raise ConfigError("CUTOVER_FINDER_SQL_URL and CUTOVER_FINDER_SQL_QUERY: required by the SQL finder")
    return find_with(
        settings.finder_sql_url.get_secret_value(), settings.finder_sql_query, context.watermark, context.slot
    )
