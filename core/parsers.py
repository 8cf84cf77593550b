"""The REST API's JSON parser (the project default, REST_FRAMEWORK's DEFAULT_PARSER_CLASSES)."""

from __future__ import annotations

import codecs
import json
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from rest_framework import exceptions
from rest_framework.parsers import JSONParser

from core.strict_json import unique_keys


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class BoundedJSONParser(JSONParser):
    """DRF's JSON parser, except that:

    * nesting too deep for Python's decoder is a 400: ``json`` raises RecursionError (not
      ValueError) past about a thousand levels, which DRF does not catch, so ``[[[[…`` in a 2 MB
      body would otherwise be a 500 on any endpoint;
    * an object naming a key twice is a 400 (`unique_keys`), where DRF keeps the last one;
    * NaN and Infinity are refused, as DRF's strict mode does.
    """

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Mapping[str, Any] | None = None) -> Any:
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = codecs.getreader(encoding)(stream).read()
            return json.loads(text, object_pairs_hook=unique_keys, parse_constant=_reject_constant)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - nested too deeply.") from None
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, DuplicateKey
            raise exceptions.ParseError(f"JSON parse error - {exc}") from None
