"""JSON objects as Sentinel reads them: every body it parses (the REST API's parser,
`core.parsers`; `POST /transaction`, `fraud.engine.endpoint`) refuses an object that names a key
twice. No Django here: the hot paths import it."""

from __future__ import annotations

from typing import Any

__all__ = ["DuplicateKey", "unique_keys"]


class DuplicateKey(ValueError):
    """A JSON object names one key twice (RFC 8259 4: names SHOULD be unique; parsers disagree on
    which one wins, so a body read one way by Sentinel and another by an upstream or a log
    reader is refused rather than guessed)."""

    def __init__(self, key: str) -> None:
        super().__init__(f"the key {key!r} appears twice in one object")
        self.key = key


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """`json.loads`' object_pairs_hook: the object as a dict. Raises DuplicateKey."""
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise DuplicateKey(key)
            seen.add(key)
    return obj
