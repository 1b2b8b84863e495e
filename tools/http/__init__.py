"""The one HTTP transport layer: auth and retry models, and the retry loop every client uses."""

from tools.http.config import AuthKind, HttpAuth, RetryPolicy
from tools.http.retry import RETRYABLE_STATUS, RetryingAdapter, ServiceUnavailableError, send_with_retry

__all__ = [
    "AuthKind",
    "HttpAuth",
    "RetryPolicy",
    "RETRYABLE_STATUS",
    "RetryingAdapter",
    "ServiceUnavailableError",
    "send_with_retry",
]
