"""The teacher client: every paid call to an OpenAI-compatible API goes through here.

``client`` sends synchronous calls (cache, budget reservation, retries, rate limits via ``ratelimit``,
several servers via ``endpoint`` and ``endpoint_pool``); ``batch_api`` and ``batch_jobs`` send the same
requests through the provider's Batch API; ``request`` builds one request, ``outcomes`` classifies its
answer, ``budget`` holds the money caps and the worst case a request reserves, and ``retry`` the one retry
policy (waits, Retry-After, the error once retries are spent) both paths use.
"""
