"""Debian's Prometheus for the tests: a server scraping one target, and instant queries."""

from __future__ import annotations

import json
import shutil
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx

from tests.servers import free_port

PROMETHEUS = shutil.which("prometheus")


@contextmanager
def scraping(job: str, target: int, folder: Path) -> Iterator[str]:
    """Debian's Prometheus scraping 127.0.0.1:`target` every second; its API's address."""
    assert PROMETHEUS, "Debian's prometheus is installed by scripts/debian-deps"
    config = folder / "prometheus.yml"
    config.write_text(
        json.dumps(  # YAML is a superset of JSON
            {
                "global": {"scrape_interval": "1s", "scrape_timeout": "1s"},
                "scrape_configs": [
                    {"job_name": job, "static_configs": [{"targets": [f"127.0.0.1:{target}"]}]}
                ],
            }
        )
    )
    port = free_port()
    process = subprocess.Popen(
        [
            PROMETHEUS,
            f"--config.file={config}",
            f"--storage.tsdb.path={folder / 'tsdb'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(10)


def query(prometheus: str, promql: str) -> dict[str, float]:
    """{label set as text: value} of an instant query; waits until the series are there."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            answer = httpx.get(f"{prometheus}/api/v1/query", params={"query": promql}, timeout=5)
            result = answer.json()["data"]["result"]
        except (httpx.HTTPError, KeyError, ValueError):
            result = []
        if result:
            return {
                ",".join(f"{k}={v}" for k, v in sorted(r["metric"].items()) if k != "__name__"
                         and k not in ("instance", "job")): float(r["value"][1])
                for r in result
            }  # fmt: skip
        time.sleep(0.5)
    raise AssertionError(f"Prometheus has no {promql}")
