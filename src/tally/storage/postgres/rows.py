"""Many rows as one parameter on PostgreSQL: a JSON text ``[[…], …]``
(msgspec-encoded: far cheaper for the client than a parameter per value, or
arrays, and cheap for the server to take apart), turned back into rows by
``jsonb_array_elements``. ``tally.storage.postgres.batch`` says where it is used."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import msgspec

ENCODER = msgspec.json.Encoder()


def rows_json(rows: Sequence[Sequence[Any]]) -> str:
    """``rows`` as the JSON text ``rows_from`` takes apart."""
    return ENCODER.encode(rows).decode()


def rows_from(columns: str) -> str:
    """``SELECT`` of the rows of one JSON parameter (``rows_json``), one
    column per ``name type`` of ``columns`` (comma-separated), in order."""
    fields = []
    for index, column in enumerate(columns.split(",")):
        name, kind = column.split()
        value = f"j->>{index}"
        fields.append(f"{value} AS {name}" if kind == "text" else f"({value})::{kind} AS {name}")
    return f"SELECT {', '.join(fields)} FROM jsonb_array_elements(?::jsonb) AS j"


# ``column = ANY_JSON``: a list of text values as one JSON parameter
# (``values_json``), looked up with one index probe per value in custom and
# generic plans alike (the array is an init plan's value)
ANY_JSON = "ANY(ARRAY(SELECT jsonb_array_elements_text(?::jsonb)))"


def values_json(values: Sequence[str]) -> str:
    """``values`` as the JSON parameter of ``ANY_JSON``."""
    return ENCODER.encode(values).decode()
