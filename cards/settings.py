"""The one settings model: every knob, its environment variable and its default.

Celery's own configuration (``celeryconfig.py``) reads from here, so a setting is
defined exactly once. Each field's environment variable is ``CARDS_<FIELD>`` unless an
alias says otherwise (the Celery and Stripe variables keep their usual names); the
README's settings table is generated from the field descriptions. Secrets are
``SecretStr``, so a settings object can be logged without leaking them, and may come
from a file (``STRIPE_API_KEY_FILE``). More: ``docs/internals.md``.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path
from typing import Any, Literal, Self

from pydantic import AliasChoices, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from cards.destinations import Allowlist
from cards.rabbitmq import is_amqp
from cards.rate_table import parse_rate_limits
from cards.signatures import check_secret

__all__ = [
    "IDEMPOTENCY_KEY_LIFETIME_SECONDS",
    "STRIPE_API_VERSION",
    "Settings",
    "get_settings",
    "mask_url_password",
    "weak_password_problem",
]

#: Stripe may prune an idempotency key 24 h after first use; a retry window
#: longer than that could send a pruned key, which Stripe treats as new.
IDEMPOTENCY_KEY_LIFETIME_SECONDS = 24 * 3600
#: The Stripe API version every call names (``Stripe-Version``): the one whose published
#: OpenAPI description the requests and the emulator were checked against.
STRIPE_API_VERSION = "2020-08-27"


class Settings(BaseSettings):
    """Runtime configuration, read from the environment (and ``.env`` if present)."""

    model_config = SettingsConfigDict(
        env_prefix="CARDS_",
        env_file=".env",
        extra="ignore",
        populate_by_name=True,
        # A validation error would otherwise quote the raw input, secrets included.
        hide_input_in_errors=True,
    )

    celery_broker_url: str = Field(
        default="redis://127.0.0.1:6379/0",
        validation_alias=AliasChoices("CELERY_BROKER_URL"),
        description="Broker URL (redis://, rediss://, sentinel:// or amqp:// for RabbitMQ, "
        "password in the URL).",
    )
    celery_result_backend: str | None = Field(
        default=None,
        validation_alias=AliasChoices("CELERY_RESULT_BACKEND"),
        description="Result backend URL (Redis); defaults to a Redis broker's URL, and must be "
        "set with an amqp:// broker.",
    )
    stripe_api_key: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_API_KEY"),
        description="Stripe secret key (sk_test_… or sk_live_…, or a restricted rk_… key).",
    )
    stripe_api_key_file: Path | None = Field(
        default=None,
        validation_alias=AliasChoices("STRIPE_API_KEY_FILE"),
        description="File holding the Stripe key; used when STRIPE_API_KEY is unset.",
    )
    stripe_api_base: str = Field(
        default="https://api.stripe.com",
        validation_alias=AliasChoices("STRIPE_API_BASE"),
        description="Stripe API base URL; point it at the emulator for tests and demos.",
    )
    stripe_api_version: str = Field(
        default=STRIPE_API_VERSION,
        pattern=r"^\d{4}-\d{2}-\d{2}(\.[a-z]+)?$",
        validation_alias=AliasChoices("STRIPE_API_VERSION"),
        description="Stripe API version sent as Stripe-Version on every call (not the "
        "account's default, nor the SDK's).",
    )
    batch_stripe_version: str = Field(
        default="2026-09-30.preview",
        pattern=r"^\d{4}-\d{2}-\d{2}\.preview$",
        description="Stripe-Version of the Batch Jobs API calls (`cards migrate run "
        "--engine batch-api`, a preview): a `.preview` version Stripe accepts there.",
    )
    batch_poll_max_seconds: float = Field(
        default=5.0,
        gt=0,
        le=600,
        description="Longest wait between two looks at a running batch job (the wait doubles "
        "from 0.5 s up to this).",
    )
    stripe_timeout_seconds: float = Field(
        default=10.0, gt=0, description="Timeout of one Stripe HTTP call."
    )
    retry_max_attempts: int = Field(
        default=8, ge=1, le=100, description="Stripe attempts per job before giving up."
    )
    retry_backoff_seconds: int = Field(
        default=1, ge=1, description="Base of the exponential backoff between attempts."
    )
    retry_backoff_max_seconds: int = Field(
        default=300, ge=1, description="Cap of one backoff countdown."
    )
    retry_window_seconds: int = Field(
        default=3600,
        ge=1,
        lt=IDEMPOTENCY_KEY_LIFETIME_SECONDS,
        description="Total time a job may keep retrying, from its first attempt.",
    )
    visibility_timeout_seconds: int = Field(
        default=3600,
        ge=1,
        description="Seconds before Redis redelivers an unacknowledged job (broker and backend).",
    )
    unacked_restore_interval_seconds: int = Field(
        default=10,
        ge=1,
        description="How often a worker looks for jobs whose worker died (past the visibility "
        "timeout) and puts them back on the queue.",
    )
    result_expires_seconds: int = Field(
        default=86400, ge=60, description="How long results stay in the result backend."
    )
    state_redis_url: str | None = Field(
        default=None,
        description="Redis for per-job retry state; defaults to a Redis broker's URL, else the "
        "result backend's.",
    )
    sentinel_master: str = Field(
        default="mymaster",
        description="Name of the Redis master that the sentinels of sentinel:// URLs watch.",
    )
    queue_watcher: bool = Field(
        default=True,
        description="Wake a worker at once for a job from any producer (a BLMOVE watch per "
        "queue list; needs Redis >= 6.2). Off: jobs not pushed by this project's previous "
        "release wait up to 1 s.",
    )
    queue: str = Field(default="cards", description="Queue that jobs are sent to.")
    bulk_queue: str = Field(
        default="cards.bulk",
        description="Queue that `cards migrate` sends its jobs to, read by dedicated bulk "
        "workers so that a migration never takes a live worker's slot.",
    )
    bulk_batch_rows: int = Field(
        default=50,
        ge=1,
        le=500,
        description="Rows per message that `cards migrate` sends (1 sends one job per row).",
    )
    worker_pool: str = Field(
        default="threads",
        pattern=r"^(threads|prefork|solo)$",
        description="Celery pool of `celery -A worker worker` when no -P is given: threads "
        "runs many Stripe calls at once in one process (see README, Sizing live workers).",
    )
    worker_concurrency: int = Field(
        default=64,
        ge=1,
        le=512,
        description="Jobs a worker process runs at once when no -c is given (threads, or "
        "prefork processes); size it as Stripe latency x live rate / processes (README, "
        "Sizing live workers).",
    )
    worker_processes: int = Field(
        default=0,
        ge=0,
        le=64,
        description="Threads-pool worker processes that `celery -A worker worker` runs (the "
        "main one starts the others); 0 = one per CPU it may use (affinity, cgroup quota). "
        "Each runs CARDS_WORKER_CONCURRENCY threads (README, Sizing live workers).",
    )
    bulk_threads: int = Field(
        default=16,
        ge=1,
        le=256,
        description="Rows of one bulk batch a worker process runs at once (threads); with the "
        "Stripe latency, this and the pool size bound a bulk worker's rate.",
    )
    callback_secrets: SecretStr | None = Field(
        default=None,
        description="Standard Webhooks secrets (whsec_…) that sign callbacks, comma-separated; "
        "every one signs (rotation). Without one, callbacks are not sent.",
    )
    callback_allowed_hosts: str = Field(
        default="",
        description="Callback destinations allowed despite the SSRF rules: host names, IPs or "
        "CIDRs, each with an optional :port (IPv6 in brackets; without a port, 80 and 443), "
        "comma-separated; never one covering a cloud metadata address.",
    )
    callback_max_attempts: int = Field(
        default=10, ge=1, le=100, description="HTTP attempts per callback before giving up."
    )
    callback_backoff_seconds: int = Field(
        default=5, ge=1, description="Base of the exponential backoff between callback attempts."
    )
    callback_backoff_max_seconds: int = Field(
        default=600,
        ge=1,
        description="Cap of one callback countdown (also of Retry-After); never more than half "
        "the visibility timeout.",
    )
    callback_window_seconds: int = Field(
        default=3600,
        ge=1,
        description="Total time a callback may keep retrying, from when its job finished.",
    )
    flower_basic_auth: SecretStr | None = Field(
        default=None,
        description="Flower's basic auth, user:password (comma-separated for several users); "
        "`cards flower` refuses to start without it or with a weak password (under 12 "
        "characters, under 6 distinct ones, or containing the user name).",
    )
    signing_key_file: Path | None = Field(
        default=None,
        description="Private key (PEM) that signs task messages with Celery's auth serializer; "
        "set it with CARDS_SIGNING_CERT_FILE and CARDS_SIGNING_CERT_STORE, or none of them.",
    )
    signing_cert_file: Path | None = Field(
        default=None, description="This process's certificate (PEM), matching the signing key."
    )
    signing_cert_store: Path | None = Field(
        default=None,
        description="Directory of the certificates whose signatures are accepted.",
    )
    minimal_data: bool = Field(
        default=False,
        description="Success envelopes of every job kind carry only ids, defaults and the card "
        "list: no email, name, phone or address. A source's client_secret is never stored.",
    )
    ordering: bool = Field(
        default=True,
        description="One writer per customer and the newest request wins (worker/ordering.py).",
    )
    customer_lock_seconds: float = Field(
        default=25.0,
        gt=0,
        description="A customer lock expires after this if its worker dies; keep it above one "
        "attempt (two Stripe timeouts plus the rate-limit wait). A write without an answer "
        "keeps its customer for its retry: the countdown plus this.",
    )
    max_job_age_seconds: int = Field(
        default=2 * 86400,
        ge=60,
        description="Jobs requested longer ago than this are refused as stale; the newest-request "
        "record per customer lives this long plus an hour.",
    )
    max_clock_skew_seconds: float = Field(
        default=300.0,
        ge=0,
        le=3600,
        description="How far in the future a job's requested_at may be (clocks differ); "
        "later times are refused, by producers, the gateway and the worker.",
    )
    dead_letter_ttl_seconds: int = Field(
        default=14 * 86400,
        ge=3600,
        description="Dead letters older than this are dropped when the next one is kept.",
    )
    dead_letter_max_entries: int = Field(
        default=100_000,
        ge=1,
        description="At most this many dead letters are kept; the oldest go first.",
    )
    rate_limits: str = Field(
        default="",
        description="Stripe calls per second, shared by all workers: queue=rate or "
        "queue@acct_…=rate, comma-separated; a queue not listed is not limited.",
    )
    rate_limit_burst_seconds: float = Field(
        default=0.2,
        gt=0,
        le=1,
        description="The shared bucket holds this many seconds of calls; at most 1 s, because "
        "Stripe's own bucket holds about a second: a bigger burst at the full rate earns 429s.",
    )
    rate_limit_max_wait_seconds: float = Field(
        default=1.0,
        ge=0,
        le=10,
        description="Longest wait for a token inside a worker slot; longer waits requeue the job.",
    )
    rate_limit_recovery_seconds: float = Field(
        default=30.0,
        gt=0,
        description="After a Stripe 429 halves the rate, time to climb back to the full rate.",
    )
    metrics_port: int = Field(
        default=0,
        ge=0,
        le=65535,
        description="Port of the worker's Prometheus /metrics (main process); 0 = off.",
    )
    metrics_address: str = Field(
        default="127.0.0.1", description="Address the worker's /metrics binds."
    )
    breaker_probe_seconds: float = Field(
        default=10.0,
        gt=0,
        description="While a worker's Stripe breaker is open (no key, a refused key, an "
        "unreachable STRIPE_API_BASE), how often it probes Stripe to resume.",
    )
    gateway_api_keys: SecretStr | None = Field(
        default=None,
        description="Bearer API keys the HTTP gateway accepts, comma-separated, each "
        "TENANT:SCOPES:KEY or a bare KEY (its own tenant, every scope but admin); at least 16 "
        "characters, no placeholder. Without one `cards gateway` refuses to start.",
    )
    gateway_max_wait_seconds: float = Field(
        default=30.0,
        gt=0,
        le=300,
        description="Longest ?wait= the HTTP gateway honours; larger values are capped.",
    )
    gateway_max_body_bytes: int = Field(
        default=16384,
        ge=1024,
        le=1048576,
        description="Largest request body the HTTP gateway reads; larger ones get 413.",
    )
    gateway_max_in_flight: int = Field(
        default=256,
        ge=1,
        le=100000,
        description="Requests one HTTP gateway process serves at once (waits included); "
        "past it, 503 with Retry-After at once, and /readyz answers 503. Each of the "
        "process's Redis clients may open up to twice as many connections.",
    )
    gateway_access_log: bool = Field(
        default=True,
        description="Write the HTTP gateway's access log: one JSON line per request on "
        "stdout, without query strings.",
    )
    gateway_wait: Literal["push", "poll"] = Field(
        default="push",
        description="How a ?wait= request learns its result: push (the result backend's "
        "pub/sub, one connection per process) or poll (the old way; for comparisons).",
    )
    tracing: bool = Field(
        default=False,
        description=(
            "OpenTelemetry traces (one per job, no customer data); the standard OTEL_* "
            "variables choose the exporter. Needs the tracing extra."
        ),
    )

    @model_validator(mode="after")
    def _check_consistency(self) -> Self:
        parse_rate_limits(self.rate_limits)  # a bad table fails at start-up, naming the entry
        signing = (self.signing_key_file, self.signing_cert_file, self.signing_cert_store)
        if any(signing) and not all(signing):
            raise ValueError(
                "message signing needs CARDS_SIGNING_KEY_FILE, CARDS_SIGNING_CERT_FILE and "
                "CARDS_SIGNING_CERT_STORE together"
            )
        if self.stripe_api_key is None and self.stripe_api_key_file is not None:
            try:
                key = self.stripe_api_key_file.read_text(encoding="utf-8").strip()
            except OSError as exc:
                # The path is not secret; the content is never read into the message.
                raise ValueError(f"STRIPE_API_KEY_FILE cannot be read: {exc.strerror}") from None
            self.stripe_api_key = SecretStr(key)
        # A countdown must end well before Redis redelivers the waiting message,
        # or the job runs again in parallel with itself.
        if self.retry_backoff_max_seconds * 2 > self.visibility_timeout_seconds:
            raise ValueError(
                "CARDS_RETRY_BACKOFF_MAX_SECONDS must be at most half of "
                "CARDS_VISIBILITY_TIMEOUT_SECONDS"
            )
        return self

    @property
    def signs_messages(self) -> bool:
        return self.signing_key_file is not None

    @property
    def rate_table(self) -> dict[tuple[str, str | None], float]:
        return parse_rate_limits(self.rate_limits)

    @property
    def result_backend_url(self) -> str:
        if self.celery_result_backend:
            return self.celery_result_backend
        if is_amqp(self.celery_broker_url):  # refused by _check_redis_urls
            raise ValueError(AMQP_NEEDS_REDIS)
        return self.celery_broker_url

    @property
    def job_state_url(self) -> str:
        """Redis for job state, locks and the rate budget: never an AMQP broker's URL."""
        if self.state_redis_url:
            return self.state_redis_url
        return (
            self.result_backend_url if is_amqp(self.celery_broker_url) else self.celery_broker_url
        )

    @model_validator(mode="after")
    def _check_redis_urls(self) -> Self:
        # RabbitMQ carries jobs only: results, job state, locks and the budget need Redis.
        if is_amqp(self.celery_broker_url) and not self.celery_result_backend:
            raise ValueError(AMQP_NEEDS_REDIS)
        for name, url in (
            ("CELERY_RESULT_BACKEND", self.celery_result_backend),
            ("CARDS_STATE_REDIS_URL", self.state_redis_url),
        ):
            if url and not url.startswith(REDIS_SCHEMES):
                raise ValueError(f"{name} must be a Redis URL (redis://, rediss:// or sentinel://)")
        return self

    @model_validator(mode="after")
    def _check_callbacks_and_flower(self) -> Self:
        # Messages name the setting and the rule, never a secret.
        for number, secret in enumerate(self.callback_secret_values, start=1):
            try:
                check_secret(secret)
            except ValueError as exc:
                raise ValueError(f"CARDS_CALLBACK_SECRETS entry {number}: {exc}") from None
        Allowlist.parse(self.callback_allowed_hosts)
        if self.flower_basic_auth is not None:
            pairs = [p.partition(":") for p in self.flower_basic_auth.get_secret_value().split(",")]
            if not all(user and password for user, _, password in pairs):
                raise ValueError("CARDS_FLOWER_BASIC_AUTH must be user:password[,user:password…]")
        return self

    def __repr_args__(self) -> Any:
        # URLs may carry a password (redis://:password@host): masked in every repr.
        for name, value in super().__repr_args__():
            yield name, mask_url_password(value) if isinstance(value, str) else value

    @property
    def flower_password_problem(self) -> str | None:
        """Why a Flower password is too weak (checked by `cards flower`), or None."""
        if self.flower_basic_auth is None:
            return None
        for number, pair in enumerate(self.flower_basic_auth.get_secret_value().split(","), 1):
            user, _, password = pair.partition(":")
            problem = weak_password_problem(user, password)
            if problem:
                return f"CARDS_FLOWER_BASIC_AUTH entry {number}: {problem}"
        return None

    @property
    def callback_secret_values(self) -> tuple[str, ...]:
        """The callback signing secrets, in order (empty: callbacks are not sent)."""
        if self.callback_secrets is None:
            return ()
        raw = self.callback_secrets.get_secret_value().split(",")
        return tuple(secret.strip() for secret in raw if secret.strip())

    @property
    def callback_allowlist(self) -> Allowlist:
        return Allowlist.parse(self.callback_allowed_hosts)

    @property
    def callback_backoff_cap_seconds(self) -> int:
        """One callback countdown at most: the setting, but never past half the visibility
        timeout, or Redis would redeliver the waiting message and send it twice."""
        return max(1, min(self.callback_backoff_max_seconds, self.visibility_timeout_seconds // 2))


REDIS_SCHEMES = ("redis://", "rediss://", "sentinel://", "unix://")
AMQP_NEEDS_REDIS = (
    "an amqp:// broker carries jobs only: set CELERY_RESULT_BACKEND to a Redis URL "
    "(redis://, rediss:// or sentinel://) for results, job state, locks and the rate budget"
)

#: Flower shows every job and can revoke or apply tasks: its password must not be guessable.
MIN_FLOWER_PASSWORD_LENGTH = 12
_URL_PASSWORD = re.compile(r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@/\s]+(?=@)", re.I)


def mask_url_password(text: str) -> str:
    """``text`` with the password of any URL in it replaced by ``**********``. (Pure.)"""
    return _URL_PASSWORD.sub(r"\g<head>**********", text)


def weak_password_problem(user: str, password: str) -> str | None:
    """Why ``password`` is too weak for Flower, or None. (Pure.)"""
    if len(password) < MIN_FLOWER_PASSWORD_LENGTH:
        return f"the password must be at least {MIN_FLOWER_PASSWORD_LENGTH} characters"
    if len(set(password)) < 6 or user.lower() in password.lower():
        return "the password must not repeat the user name or a few characters"
    return None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
