"""Dev-only harness: real Redis, worker and emulator processes for tests, bench and demo.

Modules:
    chaos: tools for chaos runs (restartable servers, a periodic driver, ledger counts)
    demo: ``make run``, real jobs through a real broker, worker and emulated Stripe
    gateway_process: the HTTP gateway as a real process, started as an operator would.
    processes: a private ``redis-server`` and ``celery worker`` processes
    queues: what waits in a Redis broker queue, counted in rows
    rabbitmq: a private RabbitMQ node (restartable, a vhost per run), or the machine's node
    receiver: a callback receiver on loopback, scripted statuses per path
    sentinel: a private Redis Sentinel deployment (master, replica, three sentinels)
    smoke_stripe: ``make smoke-stripe``, the whole pipeline against Stripe's test mode
"""
