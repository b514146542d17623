"""The service: the queue, the results store, Redis, the launcher, and the client of the REST API.

``queue`` submits one RQ job per checkpoint and merges their results; ``store``/``storage``/
``patterns``/``reuse`` keep results on disk; ``redis_conn`` connects to (or embeds) Redis;
``launcher``/``supervisor`` run everything with ``phasescope up``; ``client`` talks to the API;
``cost``/``ratelimit``/``gc`` bound what a user may ask and what is kept. No torch is imported here.
"""
