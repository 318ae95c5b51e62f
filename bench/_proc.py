"""Processes as /proc shows them, for the benches that count a service's CPU or memory with
every worker it started (a helper module: `make bench` runs no `_*.py`)."""

from __future__ import annotations

from pathlib import Path


def children_of() -> dict[int, list[int]]:
    """parent pid → its children's pids, read once for every process."""
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(") ", 1)[1].split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        tree.setdefault(ppid, []).append(int(stat.parent.name))
    return tree


def descendants(pid: int, tree: dict[int, list[int]] | None = None) -> list[int]:
    """The process and its descendants (`tree`: one reading of children_of for many roots)."""
    tree = children_of() if tree is None else tree
    out, todo = [], [pid]
    while todo:
        current = todo.pop()
        out.append(current)
        todo += tree.get(current, [])
    return out
