"""The REST API's JSON parser (the project default, REST_FRAMEWORK's DEFAULT_PARSER_CLASSES)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rest_framework import exceptions
from rest_framework.parsers import JSONParser


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser, except that nesting too deep for Python's decoder is a 400.

    ``json`` raises RecursionError (not ValueError) past about a thousand levels, which DRF
    does not catch: ``[[[[…`` in a 2 MB body would otherwise be a 500 on any endpoint.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from None
