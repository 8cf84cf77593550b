"""The gateway's Redis scripts (`lua/*.lua`), loaded once, and the way two of them run as one.

Every script is sent by EVALSHA with its SHA1 computed here, so the first call needs no SCRIPT LOAD
round trip unless Redis lacks it (`RespClient.evalsha` loads it on NOSCRIPT: a restart, a SCRIPT
FLUSH, a failover).

Composition: a script file is a whole script (it reads `KEYS` and `ARGV` and ends with `return`).
`script_function` wraps one in a Lua function whose parameters are named `KEYS` and `ARGV`, so a
composed script can call it with tables of its own and the file's text stays the one source of
that step's logic, tested on its own and inside the composition. Redis runs a script atomically,
so steps composed this way are one atomic step too.

Plain Python, no Django (the proxy's hot path imports it).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LuaScript", "lua_file", "script_function"]

LUA_DIR = Path(__file__).parent / "lua"


@dataclass(frozen=True)
class LuaScript:
    """A script's source and the SHA1 Redis will give it (lowercase hex)."""

    source: str
    sha: str

    @classmethod
    def of(cls, source: str) -> LuaScript:
        return cls(source, hashlib.sha1(source.encode(), usedforsecurity=False).hexdigest())


def lua_file(*names: str) -> str:
    """The text of `lua/<name>.lua` for each name, joined by newlines (a prelude and a step)."""
    return "\n".join((LUA_DIR / f"{name}.lua").read_text(encoding="utf-8") for name in names)


def script_function(name: str, source: str) -> str:
    """`source`, a whole script, as `local function name(KEYS, ARGV) ... end`: called with two
    tables it runs as the script would with those keys and arguments, and returns its reply."""
    return f"local function {name}(KEYS, ARGV)\n{source}\nend\n"
