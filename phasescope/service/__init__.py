"""The service: the queue, the results store, Redis, the launcher, and the client of the REST API.

``queue`` submits one RQ job per checkpoint and merges their results; ``store``/``storage``/
``patterns``/``reuse`` keep results on disk; ``redis_conn`` connects to (or embeds) Redis;
``launcher``/``supervisor`` run everything with ``phasescope up``; ``client`` talks to the API;
``cost``/``ratelimit``/``gc`` bound what a user may ask and what is kept. No torch is imported here.
"""

from typing import TYPE_CHECKING

from phasescope._lazy import attach

if TYPE_CHECKING:  # the re-exports, imported on first use (phasescope._lazy)
    from phasescope.service.client import ApiError, Client
    from phasescope.service.cost import Estimate, estimate
    from phasescope.service.launcher import Launcher, run_up
    from phasescope.service.queue import cancel, finalize, get_queue, status, submit
    from phasescope.service.redis_conn import EmbeddedRedis, connect
    from phasescope.service.reuse import MeasureCache
    from phasescope.service.store import ResultStore, read_table, write_local_result

__getattr__, __dir__ = attach(__name__, __file__)

__all__ = [
    "ApiError",
    "Client",
    "EmbeddedRedis",
    "Estimate",
    "Launcher",
    "MeasureCache",
    "ResultStore",
    "cancel",
    "connect",
    "estimate",
    "finalize",
    "get_queue",
    "read_table",
    "run_up",
    "status",
    "submit",
    "write_local_result",
]
