"""The dashboard's tiles: how an app puts a panel on `/dashboard/` without the dashboard importing it.

A tile is any object with a `key`, a `title` and a call `tile(scope) -> TileData`. The site lists
the tiles to show in the setting `SENTINEL_DASHBOARD_TILES` (dotted paths, in display order);
`dashboard_tiles()` imports them by name, so observability never imports monitors or fraud (and
`core/tests/test_architecture.py` sees no arrow): an app that lands adds one line to the setting.

A tile is called once per second by the one process producing the snapshot (never per viewer),
in a worker thread, so it may use the ORM; it must be quick (a few indexed queries) and must
scope everything it returns to `scope.tenant_uuid` when that is set: tenants are walls. An
exception in one tile is logged and shown as that tile's error; the others still render.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Literal, Protocol, TypedDict, runtime_checkable

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.utils.module_loading import import_string

TileStatus = Literal["ok", "warning", "critical", "idle"]


class TileFigure(TypedDict):
    """A headline number: `{"label": "open", "value": 3}` (value as shown; the unit in the label)."""

    label: str
    value: str | int | float


class TileRow(TypedDict):
    """One line of a tile's list: `label` on the left, `value` on the right, `status` colours it."""

    label: str
    value: str
    status: TileStatus


class TileData(TypedDict):
    """What a tile returns, JSON-ready: the page renders any tile from this shape alone.

    `status` colours the tile's header; `figures` are its headline numbers; `rows` its list, at
    most about ten (the newest or worst first); `empty` the sentence shown when `rows` is empty.
    """

    status: TileStatus
    figures: list[TileFigure]
    rows: list[TileRow]
    empty: str


@dataclass(frozen=True)
class DashboardScope:
    """Whose view a snapshot is: the whole fleet (`tenant_uuid` None, staff only) or one tenant's
    (`tenant_uuid` the tenant's UUID as text, dashed, as `RequestRecord.tenant_key` carries it)."""

    tenant_uuid: str | None = None
    tenant_slug: str | None = None

    @property
    def fleet(self) -> bool:
        return self.tenant_uuid is None


@runtime_checkable
class Tile(Protocol):
    """A dashboard panel contributed by an app (see the module's docstring for the contract)."""

    key: str  # unique, stable, [a-z_]: the page keys its panel by it
    title: str

    def __call__(self, scope: DashboardScope) -> TileData: ...


@functools.cache
def dashboard_tiles() -> tuple[Tile, ...]:
    """The tiles `SENTINEL_DASHBOARD_TILES` names, imported once per process, in its order.

    Raises `ImproperlyConfigured` for a path that does not import, an object that is not a
    `Tile`, or two tiles with one key.
    """
    tiles: list[Tile] = []
    for path in getattr(settings, "SENTINEL_DASHBOARD_TILES", ()):
        try:
            tile = import_string(path)
        except ImportError as exc:
            raise ImproperlyConfigured(f"SENTINEL_DASHBOARD_TILES: {path!r} does not import ({exc})") from exc
        if not isinstance(tile, Tile):
            raise ImproperlyConfigured(f"SENTINEL_DASHBOARD_TILES: {path!r} is not a Tile (key, title, __call__)")
        tiles.append(tile)
    keys = [tile.key for tile in tiles]
    if len(set(keys)) != len(keys):
        raise ImproperlyConfigured(f"SENTINEL_DASHBOARD_TILES: two tiles share a key in {keys}")
    return tuple(tiles)
