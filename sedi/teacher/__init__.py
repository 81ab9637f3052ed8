"""The teacher client: every paid call to an OpenAI-compatible API goes through here.

``client`` sends synchronous calls (cache, budget reservation, retries, rate limits via ``ratelimit``,
several servers via ``endpoint`` and ``endpoint_pool``); ``batch_api`` and ``batch_jobs`` send the same
requests through the provider's Batch API; ``request`` builds one request, ``outcomes`` classifies its
answer and ``budget`` holds the money caps.
"""
