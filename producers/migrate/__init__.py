"""``cards migrate``: set many customers' default card from a CSV or JSONL file, resumably.

A migration scans its file (every row validated, the file hashed), then sends
the valid rows to the bulk queue with at most a window in flight, writing a
report line per finished row and recording progress in Redis so that a killed
producer resumes where it stopped. Design and measurements: docs/migrations.md.

Modules:
    cli: the ``cards migrate`` Typer sub-app (run, status, resume, cancel, list).
    scan: reading the file: rows with their lines, validated; the hashing scan.
    send: the sender: rows as jobs on the bulk queue, a bounded window, results.
    report: the report CSV, one line per finished row.
    store: the migration's record in Redis (counts, finished lines) and its state.
    progress: the progress bar, or log lines with ``--quiet``.
    batch_engine: the batch-api engine (preview): batch jobs per account, results, settling.
    batch_plan: the rows in a scratch SQLite file: newest per customer, lines per account.
    batch_format: every guess about Stripe's Batch Jobs API (preview), in one place.
    batch_client: a client of that API: create, retrieve, cancel, upload, results.
    batch_errors: why a batch-api migration stopped, one exception class per meaning.
    lua: the store's Redis scripts (``*.lua``).
"""
