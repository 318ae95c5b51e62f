"""The staff console: pages and assets served by the API at /console/ (same origin)."""

from __future__ import annotations

from fastapi import FastAPI


def install(app: FastAPI) -> None:
    """Mount the console's pages and assets on the API application."""
