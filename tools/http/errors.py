"""What every client raises when a service stays unreachable.

Apart from retry.py, which imports httpx and requests, so code that only catches this error
(the engine fallback of `imaging-agent contour`) starts without either (issue 11).
"""

from __future__ import annotations


class ServiceUnavailableError(RuntimeError):
    """The server could not be reached, or kept failing, after every retry."""

    def __init__(self, service: str, url: str, detail: str, attempts: int) -> None:
        self.service = service
        self.url = url
        self.detail = detail
        self.attempts = attempts
        super().__init__(
            f"{service} at {url} did not answer usefully after {attempts} tries: {detail}. "
            f"Check that the server is running and reachable (imaging-agent services status)."
        )
