"""The one HTTP transport layer: auth and retry models (here), the retry loop every client uses
(`tools.http.retry`) and the error it raises (`tools.http.errors`).

The retry loop is not re-exported: it imports httpx and requests, which the offline paths that
only need the models must not pay for (issue 11).
"""

from tools.http.config import AuthKind, HttpAuth, RetryPolicy

__all__ = ["AuthKind", "HttpAuth", "RetryPolicy"]
