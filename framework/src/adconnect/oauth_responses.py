"""Reading token-endpoint answers: the token response model and error-body helpers.

Used by :mod:`adconnect.oauth` (which alone decides what an answer means); the helpers are
plain functions so provider clients can parse ``Retry-After`` and provider error bodies the
same way.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from urllib.parse import urlsplit, urlunsplit

import httpx
from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator

from adconnect.redaction import redact

__all__ = ["TokenResponse", "endpoint_of", "error_fields", "retry_after", "safe_text"]

_TOKENISH = re.compile(r"[A-Za-z0-9\-_.~+/]{24,}=*")
MAX_DESCRIPTION = 160


class TokenResponse(BaseModel):
    """A successful token-endpoint answer (RFC 6749 §5.1); unknown fields are ignored."""

    model_config = ConfigDict(extra="ignore")

    access_token: SecretStr
    token_type: str = "Bearer"  # noqa: S105
    expires_in: float | None = Field(default=None, ge=0)
    refresh_token: SecretStr | None = None
    scope: str | list[str] | None = None

    @field_validator("access_token")
    @classmethod
    def _present(cls, value: SecretStr) -> SecretStr:
        if not value.get_secret_value().strip():
            raise ValueError("empty access token")
        return value


def endpoint_of(url: str) -> str:
    """``url`` without query string or fragment (safe to log and store)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def error_fields(response: httpx.Response) -> tuple[str | None, str | None, object]:
    """``(error, description, subcode)`` from an RFC 6749 or a Graph-API-style error body."""
    try:
        body = response.json()
    except ValueError:
        return None, None, None
    if not isinstance(body, dict):
        return None, None, None
    error = body.get("error")
    if isinstance(error, dict):  # Meta: {"error": {"message", "type", "code", "error_subcode"}}
        code = error.get("code")
        name = str(code) if isinstance(code, int) else error.get("type")
        return (
            name if isinstance(name, str) else None,
            error.get("message") if isinstance(error.get("message"), str) else None,
            error.get("error_subcode"),
        )
    description = body.get("error_description")
    return (
        error if isinstance(error, str) else None,
        description if isinstance(description, str) else None,
        None,
    )


def safe_text(text: str | None, secrets: Iterable[str]) -> str:
    """A provider description fit for a message: secrets masked, one line, truncated."""
    if not text:
        return ""
    for value in secrets:
        if value:
            text = text.replace(value, "***")
    text = _TOKENISH.sub("***", redact(text))
    text = " ".join("".join(c if c.isprintable() else " " for c in text).split())
    return text if len(text) <= MAX_DESCRIPTION else text[: MAX_DESCRIPTION - 1] + "…"


def retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds from a ``Retry-After`` header (delta-seconds or HTTP-date)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())
