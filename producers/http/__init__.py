"""The producers' HTTP API (``cards gateway``): the seed's calls as jobs, over FastAPI.

Modules:
    app: the ASGI app factory (create_app) and serve (uvicorn, --workers processes).
    routes: the routes: job routes, a job's status, /healthz, /readyz.
    dispatch: sending the API's jobs and reading their states and results (Celery).
    publish: sending a job on the event loop (Celery builds it, redis.asyncio sends it).
    result_feed: waking waiting requests with their job's result (one pub/sub connection).
    shedding: the in-flight cap (503 with Retry-After) and readiness.
    body: reading a request's JSON body within the size limit.
    errors: which HTTP answer for which failure (envelope statuses, GatewayError, handlers).
    auth: bearer API keys, scopes and the auth dependencies.
    ownership: which tenant owns which job id (the claims in Redis).
    models: the request and response models and the OpenAPI helpers.
    access_log: the access log, JSON lines without query strings.
    migrations: the migration page (migrations.html) and its JSON, /migrations.
    tracing: request spans (FastAPI instrumentation) when CARDS_TRACING is on.
"""
