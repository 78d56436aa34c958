"""Security settings, each proven with real processes: signed messages, a Redis
password, result expiry, minimal result data."""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest
import redis
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from cards.batches import BATCH_TASK_NAME
from cards.jobs import TASK_NAME
from harness.processes import (
    BIN,
    RedisServer,
    TlsFiles,
    client_app,
    run_redis,
    run_worker,
    wait_for,
)
from harness.receiver import run_receiver
from producers import enqueue_assign_card, enqueue_list_cards, enqueue_set_default_card, get_result
from stripe_emulator.process import EmulatorProcess
from tests.integration.conftest import API_KEY, RECEIVER_PORT, customer_writes, worker_env


def self_signed(directory: Path, name: str) -> TlsFiles:
    """A private key and a self-signed certificate for 127.0.0.1, as an operator issues them."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    files = TlsFiles(key=directory / f"{name}-key.pem", cert=directory / f"{name}-cert.pem")
    files.key.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    files.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return files


def make_signing_files(directory: Path) -> dict[str, str]:
    store = directory / "certs"
    store.mkdir()
    files = self_signed(store, "worker")
    key = files.key.rename(directory / "worker-key.pem")  # only certificates in the store
    return {
        "CARDS_SIGNING_KEY_FILE": str(key),
        "CARDS_SIGNING_CERT_FILE": str(files.cert),
        "CARDS_SIGNING_CERT_STORE": str(store),
    }


def test_signed_messages_are_accepted_and_unsigned_ones_refused(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    logs_dir: Path,
    customers: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    db = 8
    url = redis_server.url(db)
    signing = make_signing_files(tmp_path)
    env = worker_env(url, emulator.url, **signing)
    signed, unsigned = customers[0], customers[1]
    with run_worker(env, logs_dir / "signed.log", name="signed") as worker:
        # A producer with the same key and store: the `cards` CLI, as a user runs it.
        done = subprocess.run(
            [
                str(BIN / "cards"),
                "enqueue",
                "--user-id",
                signed["id"],
                "--source",
                signed["cards"][1],
                "--wait",
            ],
            env={**os.environ, **env},
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["status"] is True

        # A producer without the key sends plain JSON: the worker refuses it.
        plain = client_app(url)
        job_id = str(uuid.uuid4())
        plain.send_task(
            TASK_NAME,
            kwargs={"userId": unsigned["id"], "default_source": unsigned["cards"][1]},
            task_id=job_id,
        )
        wait_for(lambda: "Refusing to deserialize" in worker.log, 30, "the refusal")
        assert worker.alive
    assert customer_writes(emulator, unsigned["id"]) == 0
    assert customer_writes(emulator, signed["id"]) == 1


def test_worker_and_producers_work_with_a_redis_password(
    emulator: EmulatorProcess, logs_dir: Path, customers: list[dict[str, Any]]
) -> None:
    password = "s3cret-redis-pw-" + uuid.uuid4().hex[:8]
    with run_redis(password=password) as server:
        url = server.url()
        with run_worker(
            worker_env(url, emulator.url), logs_dir / "password.log", name="password"
        ) as worker:
            app = client_app(url)
            customer = customers[2]
            job = enqueue_set_default_card(customer["id"], customer["cards"][1], app=app)
            assert get_result(job, timeout=30, app=app)["status"] is True
            log = worker.log
        anonymous = redis.Redis(port=server.port)
        with pytest.raises(redis.AuthenticationError):
            anonymous.ping()
    assert password not in log
    assert API_KEY not in log


def test_results_expire_after_the_configured_ttl(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    logs_dir: Path,
    customers: list[dict[str, Any]],
) -> None:
    db = 9
    url = redis_server.url(db)
    env = worker_env(url, emulator.url, CARDS_RESULT_EXPIRES_SECONDS="120")
    with run_worker(env, logs_dir / "expiry.log", name="expiry"):
        app = client_app(url)
        customer = customers[3]
        job = enqueue_set_default_card(customer["id"], customer["cards"][1], app=app)
        assert get_result(job, timeout=30, app=app)["status"] is True
    ttl = redis_server.client(db).ttl(f"celery-task-meta-{job}")
    assert 0 < ttl <= 120


#: Keys no stored envelope may hold, in any mode: a source's client_secret acts on it.
NEVER_STORED = {"client_secret"}
#: And with CARDS_MINIMAL_DATA: personal data of the customer and of its cards' owners.
PERSONAL = {
    "email",
    "name",
    "phone",
    "address",
    "shipping",
    "owner",
    "fingerprint",
    "address_line1",
    "address_line2",
    "address_city",
    "address_zip",
    "address_state",
    "address_country",
}


def keys_in(value: Any) -> set[str]:
    """Every key at any depth of a JSON value."""
    if isinstance(value, dict):
        return set(value) | {k for v in value.values() for k in keys_in(v)}
    if isinstance(value, list):
        return {k for v in value for k in keys_in(v)}
    return set()


@pytest.mark.parametrize(("minimal", "db"), [(True, 10), (False, 14)], ids=["minimal", "whole"])
def test_no_stored_envelope_of_any_job_kind_holds_a_denied_key(
    redis_server: RedisServer,
    emulator: EmulatorProcess,
    logs_dir: Path,
    customers: list[dict[str, Any]],
    minimal: bool,
    db: int,
) -> None:
    """Set-default, assign, list, a batch and a callback, through a real worker; then every
    result, dead letter and callback body in its Redis database is walked."""
    url = redis_server.url(db)
    env = worker_env(url, emulator.url, CARDS_MINIMAL_DATA=str(minimal).lower())
    # The three set-default writes (plain, with a callback, a batch row) go to three
    # customers: for one customer, a worker's processes or threads may finish a later
    # request first, and the earlier one is then rightly answered "superseded".
    customer, called_back, batched = customers[:3]
    app = client_app(url)
    with run_receiver(RECEIVER_PORT) as receiver, run_worker(env, logs_dir / f"deny-{db}.log"):
        sent = [
            enqueue_set_default_card(customer["id"], customer["sources"][0], app=app),
            enqueue_assign_card(customer["id"], "tok_visa", app=app),
            enqueue_list_cards(customer["id"], app=app),
            app.send_task(
                TASK_NAME,
                kwargs={
                    "userId": called_back["id"],
                    "default_source": called_back["sources"][0],
                    "callback_url": receiver.url("/deny"),
                },
            ).id,
        ]
        rows = [{"userId": batched["id"], "default_source": batched["sources"][0]}]
        batch_rows = [{**row, "job_id": f"deny-batch-{db}-{n}"} for n, row in enumerate(rows)]
        app.send_task(BATCH_TASK_NAME, kwargs={"jobs": batch_rows})
        envelopes = [get_result(job_id, timeout=30, app=app) for job_id in sent]
        envelopes += [get_result(row["job_id"], timeout=30, app=app) for row in batch_rows]
        wait_for(lambda: receiver.received("/deny"), 30, "the callback")
        bodies = [json.loads(request.body) for request in receiver.received("/deny")]
    assert all(envelope["status"] for envelope in envelopes), envelopes
    listed = envelopes[2]["data"]
    assert customer["sources"][0] in [card["id"] for card in listed]  # a source, with a secret
    client = redis_server.client(db)
    stored = [json.loads(client.get(key)) for key in client.scan_iter("celery-task-meta-*")]
    stored += [json.loads(raw) for raw in client.hvals("cards:dlq:entries")]
    assert len(stored) >= len(envelopes)
    denied = NEVER_STORED | (PERSONAL if minimal else set())
    for value in [*stored, *bodies]:
        assert not keys_in(value) & denied, value
    if minimal:
        data = envelopes[0]["data"]
        assert data is not None
        assert data["id"] == customer["id"]
        assert data["default_source"] == customer["sources"][0]
        assert "invoice_settings" in data
        assert envelopes[1]["data"]["cardId"].startswith("card_")
        raw = b"".join(client.get(key) for key in client.scan_iter("celery-task-meta-*"))
        for personal in (customer["email"], customer["name"], customer["phone"]):
            assert personal.encode() not in raw


def test_worker_and_producers_work_over_tls(
    emulator: EmulatorProcess,
    logs_dir: Path,
    customers: list[dict[str, Any]],
    tmp_path: Path,
) -> None:
    with run_redis(tls=self_signed(tmp_path, "redis")) as server:
        url = server.url()
        with run_worker(worker_env(url, emulator.url), logs_dir / "tls.log", name="tls"):
            app = client_app(url)
            customer = customers[1]
            job = enqueue_set_default_card(customer["id"], customer["cards"][1], app=app)
            assert get_result(job, timeout=30, app=app)["status"] is True
        plain = redis.Redis(port=server.port, socket_timeout=1)
        with pytest.raises(redis.RedisError):
            plain.ping()
