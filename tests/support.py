"""Test helpers: databases on both backends, seeded accounts, the API as a subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.orm import Session, sessionmaker

from tests.servers import free_port
from workorders.contract import Role
from workorders.db import make_engine
from workorders.migrate import upgrade
from workorders.models import Principal
from workorders.security import hash_password, issue_token

ROOT = Path(__file__).resolve().parent.parent
# ../shared (sample audio, model checksums); `make test` points elsewhere for a clone elsewhere.
SHARED = Path(os.environ.get("LINLI_SHARED_DIR") or ROOT.parent / "shared")
PASSWORD = "correct horse battery"

# Service accounts as deployed: each with only the rights its job needs.
SERVICE_SCOPES = {
    "bot": [
        "residents:lookup",
        "residents:read",
        "residents:write",
        "residents:pii",
        "orders:create",
        "orders:read",
        "orders:update",
        "orders:rate",
        "appointments",
        "conversations:write",
        "proxies:request",
    ],
    "gateway": [
        "conversations:write",
        "events:read",
        "residents:lookup",
        "orders:read",
        "proxies:request",
        "notifications:write",
    ],
    "wechat": ["residents:lookup", "orders:read", "orders:rate", "events:read"],
    "terminal": ["emergency:create", "residents:lookup"],
}


@dataclass
class Backend:
    url: str
    engine: Engine
    factory: sessionmaker[Session]
    admin_url: str | None = None
    database: str | None = None

    @property
    def name(self) -> str:
        return self.engine.dialect.name

    def session(self) -> Session:
        return self.factory()

    def dispose(self) -> None:
        self.engine.dispose()
        if self.admin_url and self.database:
            admin = make_engine(self.admin_url).execution_options(isolation_level="AUTOCOMMIT")
            with admin.connect() as conn:
                conn.execute(text(f'DROP DATABASE IF EXISTS "{self.database}" WITH (FORCE)'))
            admin.dispose()


def make_backend(url: str, fresh_database: str | None = None) -> Backend:
    admin_url = None
    if fresh_database:
        admin_url = url
        admin = make_engine(url).execution_options(isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{fresh_database}" WITH (FORCE)'))
            conn.execute(text(f'CREATE DATABASE "{fresh_database}"'))
        admin.dispose()
        url = make_url(url).set(database=fresh_database).render_as_string(hide_password=False)
    upgrade(url)
    engine = make_engine(url)
    factory = sessionmaker(
        bind=engine.execution_options(linli_begin="IMMEDIATE"), expire_on_commit=False, future=True
    )
    return Backend(url, engine, factory, admin_url, fresh_database)


def hotline_token(backend: Backend) -> str:
    """A new `svc-hotline` account with exactly the rights the demo data gives it."""
    community = json.loads((ROOT / "data" / "demo" / "community.json").read_text())
    spec = next(s for s in community["services"] if s["username"] == "svc-hotline")
    with backend.session() as session:
        principal = Principal(
            username=f"svc-hotline-{uuid.uuid4().hex[:8]}",
            display_name=spec["display_name"],
            role=Role.service,
            scopes=spec["scopes"],
        )
        session.add(principal)
        session.flush()
        token = issue_token(session, principal, None)
        session.commit()
    return token


def seed_principals(backend: Backend, suffix: str = "") -> dict[str, str]:
    """Staff of every role and the service accounts; returns a token per account name.

    `suffix` makes the usernames unique when a backend is seeded more than once.
    """
    tokens: dict[str, str] = {}
    with backend.session() as session:
        for name, role in (
            ("admin", Role.admin),
            ("supervisor", Role.supervisor),
            ("agent", Role.agent),
            ("agent2", Role.agent),
        ):
            principal = Principal(
                username=name + suffix,
                display_name=name,
                role=role,
                password_hash=hash_password(PASSWORD),
            )
            session.add(principal)
            session.flush()
            tokens[name] = issue_token(session, principal, None)
        for name, scopes in SERVICE_SCOPES.items():
            principal = Principal(
                username=name + suffix, display_name=name, role=Role.service, scopes=scopes
            )
            session.add(principal)
            session.flush()
            tokens[name] = issue_token(session, principal, None)
        session.commit()
    return tokens


@dataclass
class ApiProcess:
    database_url: str
    fhir_url: str
    tokens: dict[str, str]
    extra_env: dict[str, str] = field(default_factory=dict)
    port: int = 0
    log_path: Path = Path("/dev/null")
    proc: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        self._start(healthy=True)

    def start_unhealthy_ok(self) -> None:
        """Start and wait for an answer from /health, healthy or not (Redis down on purpose)."""
        self._start(healthy=False)

    def _start(self, healthy: bool) -> None:
        self.port = self.port or free_port()  # a restart keeps its address
        env = {
            **os.environ,
            "DATABASE_URL": self.database_url,
            "FHIR_BASE_URL": self.fhir_url,
            **self.extra_env,
        }
        fd, name = tempfile.mkstemp(prefix="linli-api-", suffix=".log")
        self.log_path = Path(name)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "workorders", "serve", "--port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=fd,
            stderr=subprocess.STDOUT,
        )
        os.close(fd)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"API exited with {self.proc.returncode}")
            try:
                status = httpx.get(f"{self.base_url}/health", timeout=5).status_code
                if status == 200 or not healthy:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("API did not become healthy within 30 s")

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        self.log_path.unlink(missing_ok=True)


class Api:
    """httpx clients for the running API, one per seeded account."""

    def __init__(self, process: ApiProcess) -> None:
        self.process = process
        self.base_url = process.base_url

    def as_(self, account: str | None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {self.process.tokens[account]}"} if account else {}
        return httpx.Client(base_url=self.base_url, headers=headers, timeout=30)

    def call(self, account: str | None, method: str, path: str, **kwargs: Any) -> httpx.Response:
        with self.as_(account) as client:
            return client.request(method, path, **kwargs)


def make_caller(backend: Backend, role: str = "agent", scopes: list[str] | None = None) -> Any:
    """A real principal row and the Caller the services expect, for in-process service tests."""
    import uuid

    from workorders.security import caller_of

    with backend.session() as session:
        principal = Principal(
            username=f"{role}-{uuid.uuid4().hex[:10]}",
            display_name=role,
            role=role,
            scopes=scopes or [],
        )
        session.add(principal)
        session.commit()
        return caller_of(principal)


def fuzz_api(api: Api, report_dir: Path, *options: str, timeout: float = 300) -> None:
    """schemathesis over the API's own OpenAPI schema, bounded by `options` (--max-time …):
    fails on any 500, undocumented status, wrong content type or response outside the schema,
    with schemathesis' reproduction in the message. Redirects are answers here (the console's
    form posts answer 303), not followed."""
    result = subprocess.run(
        [
            str(Path(sys.executable).parent / "schemathesis"),
            "run",
            f"{api.base_url}/openapi.json",
            "--checks",
            "not_a_server_error,response_schema_conformance,"
            "status_code_conformance,content_type_conformance",
            "--phases",
            "examples,coverage,fuzzing",
            "--seed",
            "20261121",
            "--max-redirects",
            "0",
            "--report-dir",
            str(report_dir),
            *options,
        ],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        env={**os.environ, "SCHEMATHESIS_HOOKS": str(ROOT / "tests" / "schemathesis_hooks.py")},
    )
    summary = result.stdout[-6000:]
    assert result.returncode == 0, summary
    assert " passed" in summary and "generated" in summary, summary
