"""Shared by producers and the worker: the job contracts, the envelope, settings, the broker.

Nothing here calls Stripe; every module is imported by both sides, or by one side
to read what the other wrote in Redis. Internals: ``docs/internals.md``.

Modules:
    batches: the bulk batch contract, many ``set_default_card`` rows in one task message
    companion_jobs: contracts of the seed API's companion jobs (assign a card, list cards)
    customer_keys: a customer's lock and newest-request record in Redis (worker and batch engine)
    deadletters: jobs that failed only for a cause outside the job, kept for replay
    deliveries: a job's callback body and the record of its delivery in Redis
    destinations: where a callback may be sent, the SSRF rules
    envelope: the result envelope ``{status, message, data}`` and its error kinds
    ids: each id rule (customer, card, account, job id) once, as an annotated type
    jobs: the ``set_default_card`` job contract
    kinds: every kind of job once: task name, contract, idempotency-key prefix
    lua_scripts: Redis Lua scripts kept as ``.lua`` files, read one way
    messaging: the one way to build a Celery app, worker or producer
    migration_records: a migration's record in Redis, its shape and state (writer and readers)
    rabbitmq: RabbitMQ as the broker, the Celery settings of an ``amqp://`` URL
    rate_table: the rate-limit table parsed from settings, per queue and Stripe account
    redaction: what task events, Flower and the worker's log may show about a job
    redis_urls: Redis and Sentinel URLs, one way to open each
    results: job answers in Celery's Redis result backend, many at a time
    settings: the one settings model, every knob with its environment variable
    settings_table: the README's settings table, generated from the settings model
    signatures: callback signatures, the Standard Webhooks way
    tracing: OpenTelemetry set-up (CARDS_TRACING), spans redacted of customer data
    transport: our Redis broker transport (package: channel, kombu_check, queue_watcher, lua/)
"""
