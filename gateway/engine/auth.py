"""Who is calling through the proxy: JWT, API key, tenant header or anonymous (SPEC 2 step 3).

Plain Python with no Django import. JWTs are verified locally with the signing key and claims
simplejwt issues (HS256, `token_type: access`, `user_id`, and Sentinel's `tenant`), so a request
costs no database query. API keys are looked up by hash through an injected async function and
cached for a few seconds: a revocation takes effect within `ApiKeyResolver.ttl_s`. Tenants come
from a `TenantDirectory` snapshot the gateway reloads on change, like the route table.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final

import jwt

from gateway.engine.routes import RouteSpec

logger = logging.getLogger(__name__)

API_KEY_MARK = "snl_"
TIERS = ("vital", "standard", "economy")


@dataclass(frozen=True)
class TenantInfo:
    uuid: str
    slug: str
    tier: str
    active: bool = True
    # Rate-limit settings this tenant overrides, keyed by setting name (BURST_CAPACITY, ...).
    overrides: Mapping[str, float] = field(default_factory=dict)


@dataclass(frozen=True)
class KeyInfo:
    """What the proxy needs of an API key; `tenant_uuid` names its tenant in the directory."""

    prefix: str
    tenant_uuid: str
    scopes: frozenset[str]


@dataclass(frozen=True)
class Identity:
    """The caller as the limiter, shedder and log see it."""

    kind: str  # "jwt", "api_key", "tenant_header" or "anonymous"
    tenant_key: str  # stable key for limits: the tenant's uuid, or "ip:<address>" when anonymous
    tier: str
    tenant: TenantInfo | None = None
    principal: str | None = None  # user id or key prefix, for the log


@dataclass(frozen=True)
class AuthFailure:
    status: int  # 400, 401 or 403
    code: str
    message: str


class TenantDirectory:
    """Tenants by uuid and slug, swapped whole when they change.

    `inactive_users`: ids (as text) of deactivated users. Their access tokens stay valid JWTs until
    they expire, but a deactivation moves the config version, so within a second of it the proxy
    refuses them like the REST API does.
    """

    def __init__(
        self, tenants: Iterable[TenantInfo] = (), version: int = 0, inactive_users: Iterable[str] = ()
    ) -> None:
        self.by_uuid = {tenant.uuid: tenant for tenant in tenants}
        self.by_slug = {tenant.slug: tenant for tenant in self.by_uuid.values()}
        self.version = version
        self.inactive_users = frozenset(inactive_users)

    def find(self, reference: str) -> TenantInfo | None:
        return self.by_uuid.get(reference) or self.by_slug.get(reference)


class JwtVerifier:
    """Verifies access tokens, remembering the good ones until they expire.

    A client sends the same token on every request for its whole lifetime; decoding and checking
    the HMAC each time cost ~140 µs of the proxy's CPU per request (bench.gateway's profile).
    The cache is keyed by the exact token text, so only a byte-identical, already verified token
    skips the check, and never past its `exp`.
    """

    def __init__(
        self, signing_key: str, *, algorithm: str = "HS256", leeway_s: float = 5, max_cached: int = 10_000
    ) -> None:
        self.signing_key = signing_key
        self.algorithms = [algorithm]
        self.leeway_s = leeway_s
        self.max_cached = max_cached
        self._verified: OrderedDict[str, dict[str, object]] = OrderedDict()

    def verify(self, token: str) -> dict[str, object] | AuthFailure:
        if len(token) > 4096:
            return AuthFailure(401, "token_not_valid", "Token is too long.")
        cached = self._verified.get(token)
        if cached is not None:
            if float(cached["exp"]) + self.leeway_s > time.time():  # type: ignore[arg-type]
                return cached
            del self._verified[token]
            return AuthFailure(401, "token_expired", "Token has expired.")
        claims = self._decode(token)
        if isinstance(claims, dict):
            self._verified[token] = claims
            while len(self._verified) > self.max_cached:
                self._verified.popitem(last=False)
        return claims

    def _decode(self, token: str) -> dict[str, object] | AuthFailure:
        try:
            claims = jwt.decode(
                token,
                self.signing_key,
                algorithms=self.algorithms,
                leeway=self.leeway_s,
                options={"require": ["exp", "token_type", "user_id"]},
            )
        except jwt.ExpiredSignatureError:
            return AuthFailure(401, "token_expired", "Token has expired.")
        except jwt.InvalidTokenError:
            return AuthFailure(401, "token_not_valid", "Token is invalid.")
        if claims.get("token_type") != "access":
            return AuthFailure(401, "token_not_valid", "Not an access token.")
        return claims


KeyLookup = Callable[[str], Awaitable[KeyInfo | None]]


# A cached key still in use is looked up again, in the background, once this share of its TTL has
# passed (refresh-ahead, as Caffeine's refreshAfterWrite): a busy key never expires under its
# callers, so no request waits for the database while the cache is warm.
REFRESH_AHEAD: Final = 0.8


class ApiKeyResolver:
    """Resolves raw keys through `lookup(sha256_hex)`, caching answers (misses too, briefly, so a
    flood of bad keys does not become a flood of queries).

    * An answer is kept `ttl_s` (a miss `negative_ttl_s`): a key revoked in the database stops
      working within that time (`forget()`, called when the config version moves, at once).
    * Single flight: requests that miss the cache for one key at the same moment share one lookup
      (at 500 requests/s, an expired key sent every one of them to the database through the thread
      pool: a stall of ~260 ms every `ttl_s`, measured by bench/fraud).
    * Refresh-ahead: a key used after REFRESH_AHEAD of its TTL is looked up again in the
      background while its cached answer keeps serving; the new answer replaces it. A background
      lookup that fails is logged and the entry serves until its TTL ends, when callers wait for a
      lookup of their own (which raises the lookup's error, as any miss does).
    """

    def __init__(
        self, lookup: KeyLookup, *, ttl_s: float = 5.0, negative_ttl_s: float = 2.0, max_entries: int = 50_000
    ):
        self.lookup = lookup
        self.ttl_s = ttl_s
        self.negative_ttl_s = negative_ttl_s
        self.max_entries = max_entries
        # digest -> (expires at, refresh from, answer), monotonic seconds
        self._cache: OrderedDict[str, tuple[float, float, KeyInfo | None]] = OrderedDict()
        self._inflight: dict[str, asyncio.Task[KeyInfo | None]] = {}
        self._generation = 0  # moved by forget(): a lookup begun before it is not cached

    async def resolve(self, raw_key: str) -> KeyInfo | None:
        """The key's KeyInfo, None when it is unknown, revoked or malformed. Raises what `lookup`
        raises when the answer is not cached."""
        if not raw_key.startswith(API_KEY_MARK) or len(raw_key) > 200:
            return None
        digest = hashlib.sha256(raw_key.encode()).hexdigest()
        cached = self._cache.get(digest)
        if cached is not None:
            expires_at, refresh_from, info = cached
            now = time.monotonic()
            if now < expires_at:
                if now >= refresh_from and digest not in self._inflight:
                    self._lookup_shared(digest).add_done_callback(_log_refresh_failure)
                return info
        # Shielded: a caller that goes away must not cancel the lookup others wait on.
        return await asyncio.shield(self._lookup_shared(digest))

    def forget(self) -> None:
        self._cache.clear()
        self._inflight.clear()
        self._generation += 1

    def _lookup_shared(self, digest: str) -> asyncio.Task[KeyInfo | None]:
        task = self._inflight.get(digest)
        if task is None:
            task = asyncio.ensure_future(self._lookup_and_keep(digest, self._generation))
            task.add_done_callback(_retrieve)  # its error is its waiters' (or logged), never "not retrieved"
            self._inflight[digest] = task
        return task

    async def _lookup_and_keep(self, digest: str, generation: int) -> KeyInfo | None:
        try:
            info = await self.lookup(digest)
        finally:
            if self._inflight.get(digest) is asyncio.current_task():
                del self._inflight[digest]
        if generation == self._generation:
            now = time.monotonic()
            ttl = self.ttl_s if info else self.negative_ttl_s
            self._cache[digest] = (now + ttl, now + ttl * REFRESH_AHEAD, info)
            self._cache.move_to_end(digest)
            while len(self._cache) > self.max_entries:
                self._cache.popitem(last=False)
        return info


def _retrieve(task: asyncio.Task[KeyInfo | None]) -> None:
    if not task.cancelled():
        task.exception()


def _log_refresh_failure(task: asyncio.Task[KeyInfo | None]) -> None:
    if not task.cancelled() and (exc := task.exception()) is not None:
        logger.warning("API key refresh failed; the cached answer serves until its TTL ends (%r)", exc)


def _bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization")
    if not value:
        return None
    scheme, _, token = value.partition(" ")
    # An Authorization of another scheme (the upstream's own Basic, say) is not Sentinel's.
    return token.strip() if scheme.lower() == "bearer" else None


class Authenticator:
    """Applies a route's auth mode to a request's headers (lower-case names)."""

    # Identities kept for credentials seen again (`_remembered`); past this many, all are forgotten.
    MAX_REMEMBERED: Final = 10_000

    def __init__(self, *, jwt_verifier: JwtVerifier, keys: ApiKeyResolver, tenant_header: str) -> None:
        self.jwt_verifier = jwt_verifier
        self.keys = keys
        self.tenant_header = tenant_header.lower()
        # credential (a verified token, a KeyInfo) -> (the directory it was resolved in, identity).
        # A caller sends the same credential on every request: its identity is built once per
        # directory, which the runtime swaps whole when tenants or deactivated users change.
        self._identities: dict[object, tuple[TenantDirectory, Identity]] = {}

    async def authenticate(
        self, route: RouteSpec, headers: Mapping[str, str], client_ip: str, tenants: TenantDirectory
    ) -> Identity | AuthFailure:
        mode = route.auth_mode
        bearer = _bearer(headers) if mode in ("jwt", "jwt_or_api_key") else None
        raw_key = headers.get("x-api-key") if mode in ("api_key", "jwt_or_api_key") else None
        if bearer is not None:
            identity = self._from_jwt(bearer, tenants)
        elif raw_key is not None:
            identity = await self._from_key(raw_key.strip(), tenants)
        elif mode != "none":
            wanted = {
                "jwt": "a bearer token",
                "api_key": "an X-API-Key",
                "jwt_or_api_key": "a bearer token or X-API-Key",
            }
            return AuthFailure(401, "not_authenticated", f"This route needs {wanted[mode]}.")
        else:
            identity = self._from_header_or_ip(route, headers, client_ip, tenants)
        if self._is_foreign(route, identity):
            return AuthFailure(403, "wrong_tenant", "This route belongs to another tenant.")
        return identity

    @staticmethod
    def _is_foreign(route: RouteSpec, identity: Identity | AuthFailure) -> bool:
        """A credentialed caller of another tenant on a tenant's own route."""
        if not isinstance(identity, Identity) or not route.tenant_uuid or identity.kind not in ("jwt", "api_key"):
            return False
        return identity.tenant is None or identity.tenant.uuid != route.tenant_uuid

    def _remembered(self, credential: object, tenants: TenantDirectory) -> Identity | None:
        known = self._identities.get(credential)
        return known[1] if known is not None and known[0] is tenants else None

    def _remember(self, credential: object, tenants: TenantDirectory, identity: Identity | AuthFailure) -> None:
        if isinstance(identity, Identity):
            if len(self._identities) >= self.MAX_REMEMBERED:
                self._identities.clear()
            self._identities[credential] = (tenants, identity)

    def _from_jwt(self, token: str, tenants: TenantDirectory) -> Identity | AuthFailure:
        claims = self.jwt_verifier.verify(token)  # checked every time: a token expires
        if isinstance(claims, AuthFailure):
            return claims
        known = self._remembered(token, tenants)
        if known is not None:
            return known
        identity = self._jwt_identity(claims, tenants)
        self._remember(token, tenants, identity)
        return identity

    def _jwt_identity(self, claims: Mapping[str, object], tenants: TenantDirectory) -> Identity | AuthFailure:
        if str(claims["user_id"]) in tenants.inactive_users:
            return AuthFailure(401, "user_inactive", "This user is deactivated.")
        user = f"user:{claims['user_id']}"
        tenant_ref = claims.get("tenant")
        if not tenant_ref:
            # Staff have no tenant: limited per user, at standard priority.
            return Identity(kind="jwt", tenant_key=user, tier="standard", principal=user)
        return self._with_tenant("jwt", str(tenant_ref), tenants, principal=user)

    async def _from_key(self, raw_key: str, tenants: TenantDirectory) -> Identity | AuthFailure:
        info = await self.keys.resolve(raw_key)
        if info is None:
            return AuthFailure(401, "invalid_api_key", "Invalid, revoked or expired API key.")
        if "proxy" not in info.scopes:
            return AuthFailure(403, "insufficient_scope", "This API key lacks the 'proxy' scope.")
        known = self._remembered(info, tenants)
        if known is not None:
            return known
        identity = self._with_tenant("api_key", info.tenant_uuid, tenants, principal=info.prefix)
        self._remember(info, tenants, identity)
        return identity

    def _from_header_or_ip(
        self, route: RouteSpec, headers: Mapping[str, str], client_ip: str, tenants: TenantDirectory
    ) -> Identity | AuthFailure:
        reference = headers.get(self.tenant_header) if route.allow_tenant_header else None
        if reference:
            if len(reference) > 64:
                return AuthFailure(400, "unknown_tenant", "The tenant header is too long.")
            return self._with_tenant("tenant_header", reference.strip(), tenants, unknown_status=400)
        return Identity(kind="anonymous", tenant_key=f"ip:{client_ip}", tier="economy")

    @staticmethod
    def _with_tenant(
        kind: str, reference: str, tenants: TenantDirectory, *, principal: str | None = None, unknown_status: int = 401
    ) -> Identity | AuthFailure:
        tenant = tenants.find(reference)
        if tenant is None:
            return AuthFailure(unknown_status, "unknown_tenant", "The tenant is unknown.")
        if not tenant.active:
            return AuthFailure(403, "tenant_inactive", "This tenant is deactivated.")
        return Identity(kind=kind, tenant_key=tenant.uuid, tier=tenant.tier, tenant=tenant, principal=principal)
