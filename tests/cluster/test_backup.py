"""The restore drill: a base backup with pgBackRest, orders written after it, the database lost,
and a restore that recovers those orders from the archived WAL.

The database host is a network namespace running PostgreSQL with the archiving settings and
the pgBackRest configuration that `ops.deploy` renders for operators.
"""

from __future__ import annotations

import os
import shutil
import signal
from datetime import datetime, timezone
from pathlib import Path

from sqlalchemy import func, select, text
from sqlalchemy.engine import Engine

from ops.deploy import archiving, pgbackrest
from tests.cluster import services
from tests.cluster.hosts import network
from tests.factories import repair_body
from tests.support import make_backend, make_caller
from workorders.models import Resident, WorkOrder
from workorders.schemas import OrderCreate
from workorders.services import orders
from workorders.services.sla import load_policy
from workorders.settings import get_settings

STANZA = "linli"


def write_orders(url: str, count: int, note: str) -> list[int]:
    """`count` repair orders of a new resident, through the service as the API writes them."""
    backend = make_backend(url)
    policy = load_policy(get_settings().sla_config)
    try:
        staff = make_caller(backend)
        with backend.session() as session:
            resident = Resident(name=note, community="备份社区")
            session.add(resident)
            session.commit()
            made = []
            for _ in range(count):
                body = OrderCreate(**repair_body(resident.id, notes=note))
                made.append(
                    orders.create(
                        session, staff, body, None, None, policy, datetime.now(timezone.utc)
                    ).order.id
                )  # type: ignore[arg-type]
        return made
    finally:
        backend.dispose()


def test_a_restore_recovers_orders_written_after_the_backup(tmp_path: Path) -> None:
    with network(["db"], tmp_path) as hosts:
        db = hosts["db"]
        server = services.postgres(db, start=False)
        config = server.folder / "pgbackrest.conf"  # where postgres can read it
        repo = server.folder / "repo"
        inventory = {
            "backup": {
                "stanza": STANZA,
                "repo": str(repo),
                "data": str(server.data),
                "socket": str(server.folder),
                "port": 5432,
            }
        }
        config.write_text(pgbackrest(inventory, "the test's inventory"))
        with (server.data / "postgresql.conf").open("a") as conf:
            conf.write(archiving(str(config), STANZA))
        server.start()

        def backrest(*args: str) -> str:
            command = ["pgbackrest", f"--config={config}", f"--stanza={STANZA}", *args]
            return db.run(command, user="postgres").stdout

        backrest("stanza-create")
        before = write_orders(server.url, 5, "备份之前")
        backrest("--type=full", "backup")
        after = write_orders(server.url, 7, "备份之后")
        engine = make_backend(server.url).engine
        with engine.connect() as connection:  # close the segment: pgBackRest archives it
            segment = connection.execute(
                text("SELECT pg_walfile_name(pg_switch_wal())")
            ).scalar_one()
            connection.commit()
        engine.dispose()
        services.until(
            "the last WAL segment archived",
            lambda: archived(server, segment),
        )

        # The disk is lost: the server dies and its cluster is gone.
        [process] = [p for p in db.processes if p.poll() is None]
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(10)
        shutil.rmtree(server.data)
        backrest("restore")
        server.start()
        restored = make_backend(server.url)
        try:
            services.until("recovery to end", lambda: not in_recovery(restored.engine))
            with restored.session() as session:
                ids = set(session.execute(select(WorkOrder.id)).scalars())
                by_note = dict(
                    session.execute(
                        select(Resident.name, func.count(WorkOrder.id))
                        .join(WorkOrder, WorkOrder.resident_id == Resident.id)
                        .group_by(Resident.name)
                    ).all()
                )
        finally:
            restored.dispose()
    assert ids == set(before) | set(after)
    assert by_note == {"备份之前": 5, "备份之后": 7}


def archived(server: services.Postgres, segment: str) -> bool:
    """pgBackRest keeps each segment as <name>-<checksum>.<compression> in its repository."""
    return any((server.folder / "repo" / "archive").rglob(f"{segment}-*"))


def in_recovery(engine: Engine) -> bool:
    with engine.connect() as connection:
        return bool(connection.execute(text("SELECT pg_is_in_recovery()")).scalar_one())
