"""Command line: `python -m workorders {migrate,load-demo,serve,scheduler,rotate-key}`."""

from __future__ import annotations

import argparse
import logging
import signal
import threading
from collections.abc import Callable
from datetime import datetime, timedelta, timezone

from workorders.lease import Lease
from workorders.settings import get_settings


def _serve(args: argparse.Namespace) -> None:
    import uvicorn

    uvicorn.run(
        "workorders.app:create_app",
        log_config=None,
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level="info",
        access_log=False,
    )


def _scheduler(args: argparse.Namespace) -> None:
    """Sweeps while this host holds the lease (workorders/lease.py); stands by otherwise."""
    from workorders.redis_url import connect
    from workorders.services import sweep  # noqa: F401 (imported before the lease is taken)

    settings = get_settings()
    interval = settings.scheduler_interval_seconds
    if settings.scheduler_lease_seconds <= interval:
        raise SystemExit("SCHEDULER_LEASE_SECONDS must be longer than SCHEDULER_INTERVAL_SECONDS")
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    log = logging.getLogger("workorders.scheduler")
    log.info("scheduler: sweeping every %.1f s while it holds the lease", interval)
    client = connect(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    lease = Lease(
        client, f"{settings.event_stream}:scheduler", settings.scheduler_lease_seconds, "scheduler"
    )
    if settings.scheduler_metrics_port:
        _serve_metrics(settings.scheduler_metrics_host, settings.scheduler_metrics_port, lease)
    try:
        while not stop.is_set():
            if lease.may_sweep():
                _sweep_once(log, lease.may_sweep)
                stop.wait(interval)
            else:
                stop.wait(min(1.0, interval))  # another host sweeps; take over when it is gone
    finally:
        lease.release()


def _serve_metrics(host: str, port: int, lease: Lease) -> None:
    """GET /metrics for Prometheus, on a thread of its own (workorders/metrics.py)."""
    from prometheus_client import CollectorRegistry, start_http_server

    from workorders.db import session_factory
    from workorders.metrics import WorkCollector

    registry = CollectorRegistry()
    registry.register(WorkCollector(session_factory(False), lambda: lease.held))
    start_http_server(port, addr=host, registry=registry)
    logging.getLogger("workorders.scheduler").info("metrics on http://%s:%d/metrics", host, port)


def _sweep_once(log: logging.Logger, still_held: Callable[[], bool]) -> None:
    """One round; the lease is renewed between its steps (a long step must not let it lapse
    unnoticed), and the round ends if it was lost."""
    from workorders.db import session_factory
    from workorders.services import conversations, events, sla, sweep

    settings = get_settings()
    now = datetime.now(timezone.utc)
    try:
        policy = sla.load_policy(settings.sla_config)
    except Exception:  # a broken SLA file: say so every round until it is fixed
        log.exception("SLA configuration %s unreadable", settings.sla_config)
        return
    done: list[str] = []
    try:
        result = sweep.sweep(
            session_factory(True), policy, now, timedelta(hours=settings.rating_timeout_hours)
        )
        events.publish(session_factory(True), result.event_ids)  # alerts go out at once
        if result.event_ids:
            done.append(str(result))
    except Exception:  # keep sweeping; the next round retries
        log.exception("sweep failed")
    if not still_held():
        return
    try:  # on its own: an SLA sweep failure must not hold up an emergency's escalation
        sos = sweep.sweep_sos(
            session_factory(True),
            policy,
            now,
            timedelta(seconds=settings.terminal_heartbeat_seconds),
        )
        events.publish(session_factory(True), sos.event_ids)
        if sos.event_ids:
            done.append(str(sos))
    except Exception:
        log.exception("SOS sweep failed")
    if not still_held():
        return
    try:  # hand-overs nobody claimed: the supervisors are alerted, then again
        alerts = conversations.sweep_unclaimed(
            session_factory(True),
            now,
            settings.hours(),
            timedelta(seconds=settings.handoff_alert_seconds),
        )
        events.publish(session_factory(True), alerts)
        if alerts:
            done.append(f"{len(alerts)} unclaimed hand-overs alerted")
    except Exception:
        log.exception("hand-over sweep failed")
    if not still_held():
        return
    try:
        relayed = events.relay(session_factory(True))
        if done or relayed:
            log.info("sweep: %s; relayed %d events", "; ".join(done) or "-", relayed)
    except Exception:
        log.exception("relay failed")


def _migrate(_: argparse.Namespace) -> None:
    from workorders.migrate import upgrade

    upgrade()


def _load_demo(_: argparse.Namespace) -> None:
    from workorders.demo import load

    print(load())


def _rotate_key(args: argparse.Namespace) -> None:
    """Exit 0 once nothing is left under another key than LINLI_DATA_KEY (README)."""
    from workorders.crypto import cipher
    from workorders.db import session_factory
    from workorders.services import rotation

    if not args.check:
        done = rotation.rotate(session_factory(True), cipher(), args.batch)
        print(f"rewritten: {done.rows} rows, {done.values} values")
    counts = rotation.census(session_factory(True), cipher())
    others = sum(n for kid, n in counts.items() if kid != cipher().kid)
    print(f"under the current key {cipher().kid}: {counts[cipher().kid]}; under others: {others}")
    raise SystemExit(1 if others else 0)


def main() -> None:
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    parser = argparse.ArgumentParser(prog="python -m workorders")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the API")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("--workers", type=int, default=1)
    serve.set_defaults(func=_serve)
    sub.add_parser("scheduler", help="SLA sweeps and event relay").set_defaults(func=_scheduler)
    sub.add_parser("migrate", help="apply database migrations").set_defaults(func=_migrate)
    sub.add_parser("load-demo", help="load demo data (idempotent)").set_defaults(func=_load_demo)
    rotate = sub.add_parser(
        "rotate-key", help="re-encrypt personal data with LINLI_DATA_KEY (and count what is left)"
    )
    rotate.add_argument("--check", action="store_true", help="only count; exit 1 if any is left")
    rotate.add_argument("--batch", type=int, default=500, help="rows per transaction")
    rotate.set_defaults(func=_rotate_key)
    args = parser.parse_args()
    args.func(args)


if __name__ == "__main__":
    main()
