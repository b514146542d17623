"""Admission of writes: a token bucket per client, and a cap on the jobs waiting on the queue.

**Write rate.** Every client has a bucket of ``Settings.write_burst`` tokens that refills at
``Settings.write_rate_per_min`` tokens a minute; a write (POST, DELETE) takes one token, and a write
that finds the bucket empty is refused with the seconds until a token is back (HTTP 429 with
``Retry-After``). Buckets live in Redis, updated by one Lua script (atomic, on Redis's own clock), so
every API process behind one Redis shares them; each key expires once its bucket would be full again,
so idle clients cost no memory. When Redis cannot be reached the API process keeps its own buckets
(at most ``_LOCAL_CLIENTS`` of them) until it is back: a write that needs Redis fails with 503 anyway.

**Queue cap.** A submit that would put more than ``Settings.max_queued_jobs`` jobs on the queue is
refused (HTTP 503 with ``Retry-After``) until workers have caught up.
"""

from __future__ import annotations

import hashlib
import math
import threading
import time
from collections import OrderedDict

import redis

from phasescope.config import Settings, get_settings
from phasescope.errors import QueueFull, RateLimited

__all__ = ["TokenBuckets", "check_queue_room", "client_key"]

_KEY_PREFIX = "phasescope:ratelimit:"
_LOCAL_CLIENTS = 10_000
_REDIS_DOWN = (redis.ConnectionError, redis.TimeoutError)

# KEYS[1] the bucket; ARGV rate (tokens/s), burst (tokens). Returns {allowed 0/1, seconds to wait}.
# Floats go back as strings: Redis turns Lua numbers into integers.
_TAKE = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1]) or burst
local ts = tonumber(state[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - ts) * rate)
local allowed = 0
local wait = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
else
  wait = (1 - tokens) / rate
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil((burst - tokens) / rate * 1000) + 1000)
return {allowed, tostring(wait)}
"""


def client_key(token: str | None, address: str | None) -> str:
    """Who a write counts against: a hash of its (checked) bearer token, else its IP address.

    Args:
        token: the bearer token the request carried, only when the server checked it against its own
            (an unchecked token would let a client take a new bucket per made-up token).
        address: the peer's address (behind a reverse proxy: the proxy's).
    """
    if token:
        return "token:" + hashlib.sha256(token.encode()).hexdigest()[:32]
    return f"addr:{address or 'unknown'}"


class TokenBuckets:
    """Token buckets of the write rate, in Redis when it answers, else in this process.

    Args:
        settings: where ``write_rate_per_min`` and ``write_burst`` come from.
    """

    def __init__(self, settings: Settings | None = None) -> None:
        self.settings = settings or get_settings()
        self._local: OrderedDict[str, tuple[float, float]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def rate_per_s(self) -> float:
        return self.settings.write_rate_per_min / 60.0

    def take(self, key: str, conn: redis.Redis | None) -> None:
        """Take one token from ``key``'s bucket.

        Raises:
            RateLimited: the bucket is empty; ``retry_after_s`` says when the next token is back.
        """
        wait = self._take_local(key) if conn is None else None
        if conn is not None:
            try:
                allowed, seconds = conn.eval(  # type: ignore[misc]
                    _TAKE, 1, _KEY_PREFIX + key, repr(self.rate_per_s), str(self.settings.write_burst)
                )
                wait = None if int(allowed) else float(seconds)
            except _REDIS_DOWN:
                wait = self._take_local(key)
        if wait is not None:
            seconds = max(1, math.ceil(wait))
            raise RateLimited(
                f"too many writes from this client: at most {self.settings.write_burst} at once and "
                f"{self.settings.write_rate_per_min:g} a minute (write_burst, write_rate_per_min); "
                f"retry in {seconds} s",
                retry_after_s=seconds,
            )

    def _take_local(self, key: str) -> float | None:
        """The in-process bucket: None when a token was taken, else the seconds to wait."""
        now = time.monotonic()
        burst = float(self.settings.write_burst)
        with self._lock:
            tokens, ts = self._local.pop(key, (burst, now))
            tokens = min(burst, tokens + max(0.0, now - ts) * self.rate_per_s)
            wait = None if tokens >= 1 else (1 - tokens) / self.rate_per_s
            if wait is None:
                tokens -= 1
            self._local[key] = (tokens, now)
            while len(self._local) > _LOCAL_CLIENTS:
                self._local.popitem(last=False)
        return wait


def check_queue_room(conn: redis.Redis, new_jobs: int, settings: Settings | None = None) -> None:
    """Refuse a submit that would put the queue over ``max_queued_jobs``.

    Args:
        conn: the queue's Redis.
        new_jobs: jobs the submit may add (its checkpoints without a stored part).

    Raises:
        QueueFull: over the cap (HTTP 503 with ``Retry-After``).
    """
    settings = settings or get_settings()
    limit = settings.max_queued_jobs
    queued = int(conn.llen(f"rq:queue:{settings.queue_name}"))
    if new_jobs and queued + new_jobs > limit:
        if new_jobs > limit:
            advice = f"this analysis alone has {new_jobs} checkpoints to run: select fewer"
        else:
            advice = "retry when workers have caught up"
        raise QueueFull(
            f"the job queue is full: {queued} jobs wait and this analysis would add {new_jobs}, over the "
            f"limit of {limit} (max_queued_jobs); {advice}",
            retry_after_s=60,
        )
