"""The error hierarchy: retry loops decide by class only.

``RetryableError``: the same call may succeed later (timeouts, 429, 5xx, a node that lags or
answers inconsistently, a lost websocket). ``FatalError``: retrying cannot help (bad config, wrong
chain, schema mismatch, a reorg deeper than allowed); the node stops with one clear line.
"""

from __future__ import annotations


class DexnodeError(Exception):
    """Base of dexnode's own errors."""


class RetryableError(DexnodeError):
    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class FatalError(DexnodeError):
    pass


class ConfigError(FatalError):
    """Bad settings or input from the user: shown as one line, no traceback."""
