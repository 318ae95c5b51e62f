"""Fixtures against real services: Redis, PostgreSQL and SQLite, the API as a real process.

The environment is fixed before any `workorders` import so that the in-process code (service
tests) and the API subprocesses share one data key, one Redis and one event stream name.
"""

from __future__ import annotations

import base64
import os
import uuid

TEST_KEY = base64.urlsafe_b64encode(b"linli-test-key-0123456789abcdef!").decode()
RUN_ID = uuid.uuid4().hex[:8]
os.environ.update(
    LINLI_DATA_KEY=TEST_KEY,
    REDIS_URL=os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15"),
    EVENT_STREAM=f"linli:test:{RUN_ID}:events",
)
POSTGRES_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

# ruff: noqa: E402
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from tests.browser import chromium, console  # noqa: F401 (fixtures for the console tests)
from tests.dialogue_stack import DialogueStack, running_stack
from tests.servers import serve_app
from tests.support import Api, ApiProcess, Backend, make_backend, seed_principals
from workorders.hospital.standin import create_app as create_fhir_app

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(os.environ["REDIS_URL"])
    client.ping()
    yield client
    for key in client.scan_iter(f"linli:test:{RUN_ID}:*"):
        client.delete(key)


@pytest.fixture(scope="session")
def fhir_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The stand-in health centre, serving the demo schedule from data/."""
    app = create_fhir_app(
        ROOT / "data" / "health_centre" / "schedule.json",
        state_path=tmp_path_factory.mktemp("fhir") / "state.json",
    )
    with serve_app(app) as base:
        yield f"{base}/fhir"


@pytest.fixture(scope="session")
def sqlite_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Backend]:
    backend = make_backend(f"sqlite:///{tmp_path_factory.mktemp('db') / 'workorders.db'}")
    yield backend
    backend.dispose()


@pytest.fixture(scope="session")
def postgresql_backend() -> Iterator[Backend]:
    backend = make_backend(POSTGRES_URL, fresh_database=f"linli_test_{RUN_ID}")
    yield backend
    backend.dispose()


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.getfixturevalue(f"{request.param}_backend")


@pytest.fixture(params=["sqlite", "postgresql"])
def fresh_backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    """A database of the test's own, for tests that count everything in it."""
    if request.param == "sqlite":
        backend = make_backend(f"sqlite:///{tmp_path / 'own.db'}")
    else:
        backend = make_backend(POSTGRES_URL, fresh_database=f"linli_own_{RUN_ID}")
    yield backend
    backend.dispose()


@pytest.fixture(scope="session")
def _api_processes(fhir_url: str, redis_client: redis.Redis) -> Iterator[dict[str, ApiProcess]]:
    processes: dict[str, ApiProcess] = {}
    yield processes
    for process in processes.values():
        process.stop()


@pytest.fixture
def api(backend: Backend, fhir_url: str, _api_processes: dict[str, ApiProcess]) -> Api:
    """The work-order API as a real uvicorn process on loopback, on the test's backend."""
    process = _api_processes.get(backend.url)
    if process is None:
        tokens = seed_principals(backend)
        process = ApiProcess(backend.url, fhir_url, tokens)
        process.start()
        _api_processes[backend.url] = process
    return Api(process)


@pytest.fixture(scope="session")
def dialogue(
    sqlite_backend: Backend, fhir_url: str, redis_client: redis.Redis
) -> Iterator[DialogueStack]:
    """One dialogue core (Rasa loads for ~50 s) shared by the chat and the hotline tests."""
    tokens = seed_principals(sqlite_backend, suffix=f"-dlg{RUN_ID}")
    with running_stack(
        sqlite_backend.url, fhir_url, tokens, f"linli:test:{RUN_ID}", f"linlitest{RUN_ID}"
    ) as stack:
        yield stack
