"""Token authentication: a bearer token (or the dashboard's cookie) is hashed and compared with the SHA-256 of
each configured token; ``read`` may look, ``admin`` may also act (retry, re-run, release, delete)."""

from __future__ import annotations

import enum
import hashlib
import hmac
import os
from dataclasses import dataclass

from fastapi import HTTPException, Request, status

from dicomnode.config import HttpSettings
from dicomnode.errors import ConfigError

TOKENS_ENV = "DICOMNODE_HTTP_TOKENS"
COOKIE_NAME = "dicomnode_token"
ACTION_HEADER = "X-Dicomnode-Action"


class Role(enum.IntEnum):
    READ = 1
    ADMIN = 2


@dataclass(frozen=True)
class KnownToken:
    name: str
    role: Role
    sha256: str


def token_sha256(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def known_tokens(settings: HttpSettings, environ: dict[str, str] | None = None) -> list[KnownToken]:
    """The configured tokens and those of $DICOMNODE_HTTP_TOKENS ("ROLE:TOKEN,..."), hashed."""
    tokens = [KnownToken(t.name, Role[t.role.upper()], t.sha256) for t in settings.tokens]
    raw = (environ if environ is not None else dict(os.environ)).get(TOKENS_ENV, "")
    for index, item in enumerate(part.strip() for part in raw.split(",")):
        if not item:
            continue
        role, sep, token = item.partition(":")
        if not sep or role.strip().upper() not in Role.__members__ or not token.strip():
            raise ConfigError(f"{TOKENS_ENV}: entry {index + 1} must be ROLE:TOKEN with ROLE read or admin")
        tokens.append(KnownToken(f"env{index + 1}", Role[role.strip().upper()], token_sha256(token.strip())))
    return tokens


class Authenticator:
    def __init__(self, tokens: list[KnownToken]) -> None:
        self.tokens = tokens

    def identify(self, presented: str) -> KnownToken | None:
        digest = token_sha256(presented)
        found = None
        for known in self.tokens:  # compare with every token, in constant time per token
            if hmac.compare_digest(digest, known.sha256):
                found = known
        return found

    def check(self, request: Request, needed: Role) -> KnownToken:
        """The caller's token, or 401 (none or unknown) / 403 (a read token asking to act)."""
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        from_cookie = scheme.lower() != "bearer"
        presented = request.cookies.get(COOKIE_NAME, "") if from_cookie else value.strip()
        if (
            from_cookie
            and presented
            and request.method not in ("GET", "HEAD")
            and not request.headers.get(ACTION_HEADER)
        ):
            # A cookie rides along on requests other sites make: an action must also carry our header, which
            # a cross-site form cannot send (cross-site request forgery).
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"an action with the dashboard cookie needs {ACTION_HEADER}")
        if not presented:
            raise HTTPException(
                status.HTTP_401_UNAUTHORIZED, "a token is needed (Authorization: Bearer TOKEN)", _CHALLENGE
            )
        token = self.identify(presented)
        if token is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, "unknown token", _CHALLENGE)
        if token.role < needed:
            raise HTTPException(status.HTTP_403_FORBIDDEN, f"this needs the {needed.name.lower()} role")
        return token


_CHALLENGE = {"WWW-Authenticate": "Bearer"}
