"""How an HTTP client authenticates and retries: small models every client takes as parameters.

`agent.settings.Settings` builds them from the environment; nothing below the top reads it.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, SecretStr

AuthKind = Literal["none", "basic", "bearer"]


class HttpAuth(BaseModel):
    """How a client authenticates to a PACS or FHIR server."""

    kind: AuthKind = "none"
    username: str | None = None
    password: SecretStr | None = None
    token: SecretStr | None = None

    def headers(self) -> dict[str, str]:
        """Bearer token header; basic auth is passed to httpx separately."""
        if self.kind == "bearer":
            if self.token is None:
                raise ValueError("bearer auth is configured but no token is set")
            return {"Authorization": f"Bearer {self.token.get_secret_value()}"}
        return {}

    def basic(self) -> tuple[str, str] | None:
        if self.kind != "basic":
            return None
        if not self.username or self.password is None:
            raise ValueError("basic auth is configured but the username or password is missing")
        return (self.username, self.password.get_secret_value())


class RetryPolicy(BaseModel):
    """Retry on 429, 5xx and connection errors; never on other 4xx."""

    attempts: int = Field(default=4, ge=1, description="total tries, the first one included")
    backoff_s: float = Field(default=0.5, ge=0, description="first wait; doubles after each try")
    max_backoff_s: float = Field(default=8.0, ge=0)
    timeout_s: float = Field(default=30.0, gt=0, description="per request")
