"""Who is calling: every request but the probes resolves to one principal, from an API key,
a JWT, a header set by a gateway in front, or (local use only) nobody in particular.

Keys are kept as SHA-256 digests and compared in constant time against every stored one;
a key file that changes is re-read in the background, so keys rotate without a restart.
JWTs are verified by PyJWT against a static public key or a JWKS fetched asynchronously,
cached, and refetched (at most every few seconds) when a token names an unknown `kid`.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import logging
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import httpx
import jwt
import yaml
from starlette.datastructures import Headers

from rillet_runtime.settings import ApiKeysSettings, AuthSettings, JwtSettings

log = logging.getLogger(__name__)

_JWKS_MIN_REFETCH_SECONDS = 10.0
_MAX_PRINCIPAL_CHARS = 256


@dataclass(frozen=True, slots=True)
class Principal:
    name: str

    @property
    def key(self) -> str:
        """Scopes the principal's threads, runs and limits; no user text in Redis keys."""
        return hashlib.sha256(self.name.encode()).hexdigest()[:32]


ANONYMOUS = Principal("anonymous")


class Unauthenticated(Exception):
    """Missing or bad credentials: 401, with this message and no detail on which check failed
    beyond what helps an honest client."""


class Authenticator(Protocol):
    challenge: str  # the WWW-Authenticate value of a 401

    async def authenticate(self, headers: Headers) -> Principal: ...

    async def aclose(self) -> None: ...


def presented_token(headers: Headers) -> str | None:
    """`Authorization: Bearer <token>` (what the openai SDK sends) or `x-api-key`."""
    authorization = headers.get("authorization", "")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() == "bearer" and token.strip():
        return token.strip()
    return headers.get("x-api-key") or None


def _principal(name: object) -> Principal:
    if not isinstance(name, str) or not name or len(name) > _MAX_PRINCIPAL_CHARS:
        raise Unauthenticated("the credentials name no principal")
    return Principal(name)


class Anonymous:
    """`auth.mode: none`: everyone is the same principal (local use)."""

    challenge = ""

    async def authenticate(self, headers: Headers) -> Principal:
        return ANONYMOUS

    async def aclose(self) -> None:
        return None


class TrustedHeader:
    """A gateway in front (oauth2-proxy, Envoy) authenticated the caller and names it in a
    header; only safe when nothing else can reach the pods (the operator's NetworkPolicy)."""

    challenge = 'Bearer realm="rillet"'

    def __init__(self, header: str) -> None:
        self.header = header.lower()

    async def authenticate(self, headers: Headers) -> Principal:
        values = headers.getlist(self.header)
        if len(values) != 1:  # a client's own copy beside the gateway's: trust neither
            raise Unauthenticated(f"send the {self.header} header exactly once")
        return _principal(values[0])

    async def aclose(self) -> None:
        return None


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


def read_api_keys(path: Path) -> dict[bytes, str]:
    """Key digest -> principal, from a folder of `<principal>` files (a mounted Secret) or a
    YAML mapping of principal: key. Blocking: call it off the event loop."""
    if path.is_dir():
        entries = {
            f.name: f.read_text(encoding="utf-8").strip()
            for f in sorted(path.iterdir())
            if f.is_file() and not f.name.startswith(".")
        }
    else:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: expected a mapping of principal: key")
        entries = {str(name): str(key).strip() for name, key in loaded.items()}
    return {_digest(key): name for name, key in entries.items() if key}


def _signature(path: Path) -> tuple[Any, ...]:
    """Changes whenever the keys may have: Kubernetes swaps a Secret's `..data` link."""
    files = sorted(path.iterdir()) if path.is_dir() else []
    return tuple((p.name, p.stat().st_mtime_ns) for p in [path, *files] if p.exists())


class ApiKeys:
    """`auth.mode: api_keys`. Start with `await ApiKeys.load(settings)`."""

    challenge = 'Bearer realm="rillet"'

    def __init__(self, settings: ApiKeysSettings, keys: dict[bytes, str]) -> None:
        assert settings.path is not None  # enforced by AuthSettings
        self.path = settings.path
        self.reload_seconds = settings.reload_seconds
        self._keys = keys
        self._signature: tuple[Any, ...] = ()
        self._watcher: asyncio.Task[None] | None = None

    @classmethod
    async def load(cls, settings: ApiKeysSettings) -> ApiKeys:
        assert settings.path is not None
        keys = await asyncio.to_thread(read_api_keys, settings.path)
        api_keys = cls(settings, keys)
        api_keys._signature = await asyncio.to_thread(_signature, settings.path)
        api_keys._watcher = asyncio.create_task(api_keys._watch(), name="api-keys-reload")
        return api_keys

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.reload_seconds)
            try:
                signature = await asyncio.to_thread(_signature, self.path)
                if signature != self._signature:
                    self._keys = await asyncio.to_thread(read_api_keys, self.path)
                    self._signature = signature
                    log.info("API keys reloaded from %s: %d keys", self.path, len(self._keys))
            except (OSError, ValueError, yaml.YAMLError) as exc:  # keep the keys we have
                log.warning("API keys in %s not reloaded: %s", self.path, exc)

    async def authenticate(self, headers: Headers) -> Principal:
        token = presented_token(headers)
        if token is None:
            raise Unauthenticated("send an API key as `Authorization: Bearer <key>`")
        presented = _digest(token)
        found: str | None = None
        for digest, name in self._keys.items():  # every key compared: no early exit
            if hmac.compare_digest(digest, presented):
                found = name
        if found is None:
            raise Unauthenticated("the API key is not valid")
        return Principal(found)

    async def aclose(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher


class JwtBearer:
    """`auth.mode: jwt`."""

    challenge = 'Bearer realm="rillet", error="invalid_token"'

    def __init__(self, settings: JwtSettings, http: httpx.AsyncClient) -> None:
        self.settings = settings
        self._http = http
        self._jwks: dict[str, Any] = {}
        self._fetched_at = -_JWKS_MIN_REFETCH_SECONDS  # the last attempt, successful or not
        self._refetch = asyncio.Lock()

    async def _key_for(self, kid: str | None) -> Any:
        if self.settings.public_key is not None:
            return self.settings.public_key
        now = time.monotonic()
        since = now - self._fetched_at
        if since > self.settings.jwks_cache_seconds or (
            (kid or "") not in self._jwks and since > _JWKS_MIN_REFETCH_SECONDS
        ):
            async with self._refetch:
                if self._fetched_at < now:  # nobody refetched while we waited
                    await self._fetch_jwks()
        key = self._jwks.get(kid or "")
        if key is None:
            raise Unauthenticated("the token's signing key is unknown")
        return key

    async def _fetch_jwks(self) -> None:
        assert self.settings.jwks_url is not None
        self._fetched_at = time.monotonic()
        try:
            response = await self._http.get(self.settings.jwks_url, timeout=5)
            response.raise_for_status()
            keys = jwt.PyJWKSet.from_dict(response.json()).keys
        except (httpx.HTTPError, ValueError, jwt.PyJWTError) as exc:
            log.warning("JWKS from %s not fetched: %s", self.settings.jwks_url, exc)
            return  # keep serving with the keys we have
        self._jwks = {key.key_id or "": key.key for key in keys}

    async def authenticate(self, headers: Headers) -> Principal:
        token = presented_token(headers)
        if token is None:
            raise Unauthenticated("send a JWT as `Authorization: Bearer <token>`")
        try:
            header = jwt.get_unverified_header(token)
            key = await self._key_for(header.get("kid"))
            claims = jwt.decode(
                token,
                key,
                algorithms=self.settings.algorithms,
                audience=self.settings.audience,
                issuer=self.settings.issuer,
                leeway=self.settings.leeway_seconds,
                options={"require": ["exp", "aud", self.settings.principal_claim]},
            )
        except jwt.ExpiredSignatureError:
            raise Unauthenticated("the token has expired") from None
        except jwt.ImmatureSignatureError:
            raise Unauthenticated("the token is not valid yet") from None
        except jwt.InvalidAudienceError:
            raise Unauthenticated("the token is for another audience") from None
        except jwt.PyJWTError:
            raise Unauthenticated("the token is not valid") from None
        return _principal(claims.get(self.settings.principal_claim))

    async def aclose(self) -> None:
        return None


@contextlib.asynccontextmanager
async def open_authenticator(
    settings: AuthSettings, http: httpx.AsyncClient
) -> AsyncIterator[Authenticator]:
    """The configured authenticator, ready (keys read), closed after."""
    authenticator: Authenticator
    match settings.mode:
        case "api_keys":
            authenticator = await ApiKeys.load(settings.api_keys)
        case "jwt":
            assert settings.jwt is not None  # enforced by AuthSettings
            authenticator = JwtBearer(settings.jwt, http)
        case "trusted_header":
            authenticator = TrustedHeader(settings.trusted_header)
        case _:
            authenticator = Anonymous()
    try:
        yield authenticator
    finally:
        await authenticator.aclose()
