"""`make bench` (`python -m bench`): the performance targets before and after, side by side, then
every other benchmark.

Each row of the targets (bench/README.md, "Before and after") is measured twice in a row with
the same knobs: first the baseline, a git revision (BENCH_BASELINE, default bench/BASELINE)
checked out in a git worktree under var/bench/baseline/src and run with the same .venv, then
the working tree. Running the two back to back, row by row, gives both the same machine and
about the same neighbours. The table goes to the terminal and to var/bench/before_after.json
and .md; each run's own JSON is kept under var/bench/runs/{before,after}/.

Knobs: BENCH_BASELINE (a revision, or `none` to measure only the working tree), BENCH_ONLY
(comma-separated row or script names, e.g. `dialogue,sos_alert`), BENCH_RUN_TIMEOUT (seconds
per run, 2400). It measures and never asserts; exit 1 only when a run could not start or
failed.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "var" / "bench"
BASELINE_SRC = OUT / "baseline" / "src"
RUN_TIMEOUT = int(os.environ.get("BENCH_RUN_TIMEOUT", "2400"))

Figures = dict[str, float | None]


def dig(data: Any, *path: str | int) -> Any:
    """data[path[0]][path[1]]..., or None where the baseline's JSON has no such figure."""
    for key in path:
        try:
            data = data[key]
        except (KeyError, IndexError, TypeError):
            return None
    return data


def api_phase(report: dict[str, Any], operation: str, rate: int) -> dict[str, Any]:
    for result in report.get("results", []):
        if (
            result.get("backend") == "postgresql"
            and result.get("operation") == operation
            and result.get("paced_rate") == rate
        ):
            return result
    return {}


def api_figures(report: dict[str, Any]) -> Figures:
    read, create = api_phase(report, "read", 1000), api_phase(report, "create", 300)
    return {
        "reads/s (paced at 1,000/s)": read.get("rps_2xx"),
        "read p99 ms": read.get("p99_ms"),
        "creates/s (paced at 300/s)": create.get("rps_2xx"),
        "create p99 ms": create.get("p99_ms"),
    }


def dialogue_figures(report: dict[str, Any]) -> Figures:
    return {
        "turn p50 ms": dig(report, "overall_ms", "p50"),
        "turn p95 ms": dig(report, "overall_ms", "p95"),
        "turn p99 ms": dig(report, "overall_ms", "p99"),
        "turns without a reply": report.get("unanswered"),
        "Rasa peak MB": dig(report, "memory_mb", "rasa_peak"),
    }


def hotline_figures(report: dict[str, Any]) -> Figures:
    figures: Figures = {}
    for calls in ("1 call", "4 calls"):
        phase = dig(report, "phases", f"{calls} at once") or {}
        figures[f"{calls}: free speech p50 ms"] = dig(phase, "free_speech_ms", "p50")
        figures[f"{calls}: free speech p95 ms"] = dig(phase, "free_speech_ms", "p95")
        figures[f"{calls}: all turns p95 ms"] = dig(phase, "speech_end_to_first_reply_ms", "p95")
    return figures


def sos_figures(report: dict[str, Any]) -> Figures:
    burst = next(
        (
            r
            for r in report.get("results", [])
            if r.get("backend") == "postgresql" and str(r.get("phase", "")).startswith("burst")
        ),
        {},
    )
    return {
        "burst alert p50 ms": dig(burst, "alert_ms", "p50"),
        "burst alert p99 ms": dig(burst, "alert_ms", "p99"),
        "alerts missing": burst.get("missing_alerts"),
        "burst confirm p99 ms": dig(burst, "confirmed_ms", "p99"),
    }


@dataclass(frozen=True)
class Row:
    name: str
    title: str
    script: str
    figures: Callable[[dict[str, Any]], Figures]
    # figure -> (">=" or "<", the target); figures without one are context
    goals: dict[str, tuple[str, float]]
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)


ROWS = (
    Row(
        "dialogue",
        "dialogue turn, 20 conversations at once, 2.5-7.5 s between turns",
        "dialogue_turns.py",
        dialogue_figures,
        {"turn p95 ms": ("<", 300)},
        env={"BENCH_CONVERSATIONS": "20", "BENCH_THINK": "5"},
    ),
    Row(
        "api",
        "work-order API on PostgreSQL, paced",
        "workorders_api.py",
        api_figures,
        {
            "reads/s (paced at 1,000/s)": (">=", 950),
            "read p99 ms": ("<", 50),
            "creates/s (paced at 300/s)": (">=", 285),
            "create p99 ms": ("<", 50),
        },
        env={"BENCH_BACKENDS": "postgresql"},
    ),
    *(
        Row(
            f"hotline-{asr}",
            f"hotline, end of free speech → first reply audio ({hears})",
            "hotline_latency.py",
            hotline_figures,
            {f"{calls}: free speech p95 ms": ("<", 1000) for calls in ("1 call", "4 calls")},
            args=("--asr", asr),
        )
        for asr, hears in (
            ("scripted", "scripted recogniser: endpointing real"),
            ("whisper", "Whisper hears"),
        )
    ),
    Row(
        "sos",
        "SOS, 50 terminals pressed at the same instant → staff alert (PostgreSQL)",
        "sos_alert.py",
        sos_figures,
        {"burst alert p99 ms": ("<", 1000)},
        env={"BENCH_BACKENDS": "postgresql"},
    ),
)


def git(*args: str, cwd: Path = ROOT) -> str:
    return subprocess.run(
        ["git", *args], cwd=cwd, check=True, capture_output=True, text=True
    ).stdout.strip()


def baseline_revision() -> str | None:
    recorded = (ROOT / "bench" / "BASELINE").read_text(encoding="utf-8").split()[0]
    wanted = os.environ.get("BENCH_BASELINE") or recorded
    return None if wanted.lower() == "none" else git("rev-parse", f"{wanted}^{{commit}}")


def prepare_baseline(commit: str) -> Path:
    """The baseline's checkout, with this .venv, the shared Whisper model and its own trained
    Rasa model (from the cache when its inputs were trained before, else trained now)."""
    checked_out = (BASELINE_SRC / ".git").exists()
    if checked_out and git("rev-parse", "HEAD", cwd=BASELINE_SRC) != commit:
        git("worktree", "remove", "--force", str(BASELINE_SRC))
    if not (BASELINE_SRC / ".git").exists():
        shutil.rmtree(BASELINE_SRC, ignore_errors=True)
        git("worktree", "prune")
        BASELINE_SRC.parent.mkdir(parents=True, exist_ok=True)
        git("worktree", "add", "--detach", str(BASELINE_SRC), commit)
    links = {
        BASELINE_SRC / ".venv": ROOT / ".venv",
        BASELINE_SRC / "models" / "whisper-base-ct2": ROOT / "models" / "whisper-base-ct2",
        BASELINE_SRC / "node_modules": ROOT / "node_modules",
    }
    for link, target in links.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink() and target.exists():
            link.symlink_to(target)
    subprocess.run([BASELINE_SRC / "scripts" / "train"], cwd=BASELINE_SRC, check=True)
    subprocess.run([BASELINE_SRC / "scripts" / "ensure-key"], cwd=BASELINE_SRC, check=True)
    return BASELINE_SRC


@dataclass
class Run:
    side: str  # before | after
    commit: str
    ok: bool
    seconds: float
    load_before: tuple[float, ...]
    load_after: tuple[float, ...]
    report: dict[str, Any]


def run_script(
    side: str, source: Path, commit: str, script: str, args: tuple[str, ...], env: dict[str, str]
) -> Run:
    """One bench script of `source` with this .venv; `source` first on the import path, so the
    baseline's modules (and the Rasa, action and API servers the script starts) are its own."""
    environment = {**os.environ, **env, "PYTHONPATH": str(source)}
    print(f"==== bench ({side}, {commit[:7]}): {script} {' '.join(args)}".rstrip(), flush=True)
    produced = source / "var" / "bench" / f"{Path(script).stem}.json"
    produced.unlink(missing_ok=True)  # what is read afterwards is this run's
    load_before, started = os.getloadavg(), time.monotonic()
    try:
        done = subprocess.run(
            [sys.executable, f"bench/{script}", *args],
            cwd=source,
            env=environment,
            timeout=RUN_TIMEOUT,
        )
        ok = done.returncode == 0
    except subprocess.TimeoutExpired:
        print(f"bench: {script} ({side}) took over {RUN_TIMEOUT} s; stopped", file=sys.stderr)
        ok = False
    # A script that measured but exits 1 (e.g. the API's errors above 1 % in a phase) still
    # wrote its figures: they are shown, and the run is marked not ok in the JSON.
    report = json.loads(produced.read_text(encoding="utf-8")) if produced.exists() else {}
    return Run(side, commit, ok, time.monotonic() - started, load_before, os.getloadavg(), report)


def keep(run: Run, row: Row) -> None:
    folder = OUT / "runs" / run.side
    folder.mkdir(parents=True, exist_ok=True)
    text = json.dumps(run.report, indent=1, ensure_ascii=False)
    (folder / f"{row.name}.json").write_text(text + "\n", encoding="utf-8")


def verdict(value: float | None, goal: tuple[str, float] | None) -> str:
    if goal is None:
        return ""
    if value is None:
        return "—"
    op, target = goal
    return "met" if (value >= target if op == ">=" else value < target) else "MISSED"


def fmt(value: float | None) -> str:
    if value is None:
        return "—"
    if isinstance(value, int) or abs(value) >= 10:
        return f"{value:,.0f}"
    return f"{value:,.1f}"


def table(rows: list[tuple[Row, Run | None, Run]]) -> Iterator[str]:
    yield "| target | figure | before | after | goal | after meets it |"
    yield "|---|---|---|---|---|---|"
    for row, before, after in rows:
        old = row.figures(before.report) if before else {}
        new = row.figures(after.report)
        for index, figure in enumerate(new):
            title = row.title if index == 0 else ""
            goal = row.goals.get(figure)
            goal_text = GOAL_TEXT.get(figure) or (f"{goal[0]} {goal[1]:,.0f}" if goal else "")
            yield (
                f"| {title} | {figure} | {fmt(old.get(figure))} | {fmt(new.get(figure))} "
                f"| {goal_text} | {verdict(new.get(figure), goal)} |"
            )


# The paced rows schedule exactly the goal's rate: the bench counts ≥ 95 % of it as kept up.
GOAL_TEXT = {
    "reads/s (paced at 1,000/s)": "1,000/s kept (≥ 950)",
    "creates/s (paced at 300/s)": "300/s kept (≥ 285)",
}


def selected(names: set[str], *keys: str) -> bool:
    return not names or any(key in names for key in keys)


def main() -> int:
    only = {n.strip() for n in os.environ.get("BENCH_ONLY", "").split(",") if n.strip()}
    head = git("rev-parse", "HEAD")
    baseline = baseline_revision()
    source = prepare_baseline(baseline) if baseline else None
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    compared: list[tuple[Row, Run | None, Run]] = []
    failed: list[str] = []
    for row in ROWS:
        if not selected(only, row.name, row.script, Path(row.script).stem):
            continue
        before = None
        if source and baseline:
            before = run_script("before", source, baseline, row.script, row.args, row.env)
            keep(before, row)
            if not before.ok:
                failed.append(f"{row.name} (before)")
        after = run_script("after", ROOT, head, row.script, row.args, row.env)
        keep(after, row)
        if not after.ok:
            failed.append(f"{row.name} (after)")
        compared.append((row, before, after))

    compared_scripts = {row.script for row, _, _ in compared}
    for script in sorted(p.name for p in (ROOT / "bench").glob("[!_]*.py")):
        if script in compared_scripts or not selected(only, script, Path(script).stem):
            continue
        if not run_script("after", ROOT, head, script, (), {}).ok:
            failed.append(script)

    lines = [
        f"Before ({baseline[:7] if baseline else 'none'}) and after ({head[:7]}, working tree), "
        f"{os.cpu_count()} cores, started {started}; load average (1/5/15 min) at the start of "
        "each run in the JSON.",
        "",
        *table(compared),
    ]
    print("\n" + "\n".join(lines))
    (OUT / "before_after.md").write_text("\n".join(lines) + "\n", encoding="utf-8")
    summary = {
        "baseline": baseline,
        "head": head,
        "dirty": bool(git("status", "--porcelain", "--untracked-files=no")),
        "started": started,
        "cores": os.cpu_count(),
        "rows": [
            {
                "name": row.name,
                "title": row.title,
                "goals": row.goals,
                **{
                    side: (
                        {
                            "commit": run.commit,
                            "ok": run.ok,
                            "seconds": round(run.seconds),
                            "load_before": run.load_before,
                            "load_after": run.load_after,
                            "figures": row.figures(run.report),
                        }
                        if run
                        else None
                    )
                    for side, run in (("before", before), ("after", after))
                },
            }
            for row, before, after in compared
        ],
        "failed": failed,
    }
    (OUT / "before_after.json").write_text(
        json.dumps(summary, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    print(f"\nbench: {OUT.relative_to(ROOT)}/before_after.md and .json")
    if failed:
        print(f"bench: failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
