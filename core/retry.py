"""The retry policy: how many tries, and how long to wait before each retry (exponential backoff with
jitter, at least a server's Retry-After). Every retry loop in the code takes one, so backoff is
written once."""

from __future__ import annotations

import random
from dataclasses import dataclass

# 2**30 times any base delay is far above any max_delay: the cap is reached long before, and an
# unbounded loop that fails for days never overflows the float (2**1024 would).
_MAX_EXPONENT = 30


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    attempts: int = 6  # tries per call in total, the first one included; 0: unbounded (wait it out)
    base_delay: float = 0.25  # seconds before the first retry; doubles per retry
    max_delay: float = 15.0
    max_retry_after: float = 120.0  # cap on a server's Retry-After

    def exhausted(self, tries: int) -> bool:
        """Whether ``tries`` failed tries are all this policy allows (never, when unbounded)."""
        return self.attempts > 0 and tries >= self.attempts

    def delay(self, retry: int, retry_after: float | None) -> float:
        """Seconds before retry number ``retry`` (1-based): ``d = base·2^(retry-1)`` capped, jittered
        into [d/2, d] so clients that failed together do not retry together; at least Retry-After."""
        backoff = min(self.max_delay, self.base_delay * 2 ** min(max(retry - 1, 0), _MAX_EXPONENT))
        backoff *= random.uniform(0.5, 1.0)
        if retry_after is not None:
            return max(backoff, min(retry_after, self.max_retry_after))
        return backoff
