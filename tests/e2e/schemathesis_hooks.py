"""Schemathesis hooks for the e2e run (loaded via ``SCHEMATHESIS_HOOKS``): a workaround for a false positive.

``negative_data_rejection`` decides whether a negative multipart body "became valid once sent" (a
mutated ``text`` of ``0`` or ``null`` arrives as the text "0" or "null", which the spec allows) by
validating the fields as sent. Schemathesis 4.32.5 keeps a file part's generated value there, a
``Binary``, which its JSON Schema validator refuses ("Unsupported type: 'Binary'"); the exception is
read as "not valid", so a ``/v1/search`` request with an uploaded photo and such a text was
reported as invalid data accepted. Here a file part counts as the binary string it is on the wire.
Nothing else changes: the check itself still runs on every response.
"""

from __future__ import annotations

from typing import Any

from schemathesis.specs.openapi import checks
from schemathesis.transport.serialization import Binary

_form_body_is_valid_as_sent = checks._form_body_is_valid_as_sent


class _SentCase:
    """The case, with its file parts' bytes standing in as strings (their type in the schema)."""

    def __init__(self, case: Any, body: dict[str, Any]) -> None:
        self._case, self.body = case, body

    def __getattr__(self, name: str) -> Any:
        return getattr(self._case, name)


def _as_sent(value: Any) -> Any:
    if isinstance(value, Binary):
        return value.data.decode("latin-1")
    if isinstance(value, bytes):
        return value.decode("latin-1")
    return value


def _file_parts_as_strings(response: Any, case: Any, media_type: str) -> bool:
    body = case.body
    if isinstance(body, dict) and any(isinstance(v, (Binary, bytes)) for v in body.values()):
        case = _SentCase(case, {name: _as_sent(value) for name, value in body.items()})
    return _form_body_is_valid_as_sent(response, case, media_type)


checks._form_body_is_valid_as_sent = _file_parts_as_strings
