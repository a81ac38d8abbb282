"""The bounds of what a client may send, declared once and used at the schema: ids, indexes and free text.

Every id column of Lumen is a Postgres `integer` (32-bit): an id of 2**31 or more, sent to the database, fails
there ("integer out of range") and the request would end in a 500. Postgres text cannot hold NUL either. The
types below refuse such input where FastAPI parses it (path, query, form and JSON body alike), so the caller
gets a 422 that names the field, and the database never sees it. Pydantic only: services use them too.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field

MAX_INT32 = 2**31 - 1
"""The largest value of a Postgres `integer` column: the largest id, count or index Lumen stores."""

DbId = Annotated[int, Field(ge=1, le=MAX_INT32)]
"""The id of a row: 1 to 2**31 - 1 (Postgres `integer` primary keys start at 1)."""

Index = Annotated[int, Field(ge=0, le=MAX_INT32)]
"""A position or count from 0: a frame of an image, an offset into a list."""

_DECIMAL_ID = re.compile(r"[0-9]{1,10}")


def _refuse_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("text may not contain NUL characters")
    return value


FreeText = Annotated[str, AfterValidator(_refuse_nul)]
"""Text a client types or sends: any character but NUL (which Postgres cannot store). Give it a max_length
where it is used (`Annotated[FreeText, Field(max_length=...)]`)."""

MAX_DETAIL_DEPTH = 8


def _refuse_nul_inside(value: Any, depth: int = 0) -> None:
    if depth > MAX_DETAIL_DEPTH:
        raise ValueError(f"nested deeper than {MAX_DETAIL_DEPTH} levels")
    if isinstance(value, str):
        _refuse_nul(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_nul(str(key))
            _refuse_nul_inside(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            _refuse_nul_inside(item, depth + 1)


def _clean_detail(value: dict[str, Any]) -> dict[str, Any]:
    _refuse_nul_inside(value)
    return value


JsonDetail = Annotated[dict[str, Any], AfterValidator(_clean_detail)]
"""A free-form JSON object a client sends along (stored as JSON): no NUL in any key or string, nested at most
MAX_DETAIL_DEPTH levels."""


def parse_db_id(text: str) -> int | None:
    """The id written in `text` (ASCII digits, e.g. a CSV cell), or None when it is not one that can exist."""
    value = text.strip()
    if not _DECIMAL_ID.fullmatch(value):
        return None
    number = int(value)
    return number if 1 <= number <= MAX_INT32 else None
