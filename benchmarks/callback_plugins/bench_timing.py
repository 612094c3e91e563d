"""Aggregate callback for the benchmarks: when each task started, which play and role it
belongs to, and what it did on each host, written as JSON when the playbook ends.

Why not ansible.posix.profile_roles/profile_tasks: they print text meant for a person
(and profile_roles merges every play's tasks of a role into one line, including the
validate tasks the site runs from its first play), while the benchmarks need numbers they
can add up: per role, per play, tasks executed vs skipped, changed per task. One JSON file
per ansible-playbook run, named by SDAPI_BENCH_TIMING_FILE, carries all of that.

Only the benchmarks enable it (ANSIBLE_CALLBACKS_ENABLED=bench_timing with
ANSIBLE_CALLBACK_PLUGINS pointing here); it changes nothing in the run's own output.
"""

from __future__ import annotations

import json
import os
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: bench_timing
    type: aggregate
    short_description: per-task timing and outcome as JSON, for sdapi.node's benchmarks
    description:
      - Writes every task's play, role, start and end time and per-host outcome to the file
        named by the SDAPI_BENCH_TIMING_FILE environment variable.
    requirements:
      - enabled with ANSIBLE_CALLBACKS_ENABLED=bench_timing
"""


def _host_name(result) -> str:
    host = getattr(result, "host", None) or getattr(result, "_host", None)
    return host.get_name() if host is not None else "?"


def _payload(result) -> dict:
    data = getattr(result, "result", None)
    if data is None:
        data = getattr(result, "_result", {})
    return data or {}


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "aggregate"
    CALLBACK_NAME = "bench_timing"
    CALLBACK_NEEDS_ENABLED = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._path = os.environ.get("SDAPI_BENCH_TIMING_FILE")
        self._started = time.time()
        self._plays: list[str] = []
        self._tasks: list[dict] = []
        self._by_uuid: dict[str, dict] = {}

    # A task's span ends when the next task starts (the linear strategies start a task
    # only after every host finished the previous one), or when the playbook ends.
    def _close_last(self, now: float) -> None:
        if self._tasks and self._tasks[-1]["end"] is None:
            self._tasks[-1]["end"] = now

    def _open(self, task, handler: bool) -> None:
        now = time.time()
        self._close_last(now)
        role = getattr(task, "_role", None)
        entry = {
            "play": self._plays[-1] if self._plays else "",
            "play_index": len(self._plays) - 1,
            "role": role.get_name(include_role_fqcn=False) if role is not None else None,
            "name": task.get_name(),
            "action": task.action,
            "handler": handler,
            "start": now,
            "end": None,
            "hosts": {},
        }
        self._tasks.append(entry)
        self._by_uuid[task._uuid] = entry

    def _record(self, result, status: str) -> None:
        task = getattr(result, "task", None) or getattr(result, "_task", None)
        entry = self._by_uuid.get(getattr(task, "_uuid", None))
        if entry is None:
            return
        data = _payload(result)
        if status == "ok" and data.get("changed"):
            status = "changed"
        entry["hosts"][_host_name(result)] = {
            "status": status,
            "items": len(data.get("results", [])) if isinstance(data.get("results"), list) else 0,
            "at": time.time(),
        }

    def v2_playbook_on_play_start(self, play):
        self._close_last(time.time())
        self._plays.append(play.get_name())

    def v2_playbook_on_task_start(self, task, is_conditional):
        self._open(task, handler=False)

    def v2_playbook_on_handler_task_start(self, task):
        self._open(task, handler=True)

    def v2_runner_on_ok(self, result):
        self._record(result, "ok")

    def v2_runner_on_failed(self, result, ignore_errors=False):
        self._record(result, "ignored" if ignore_errors else "failed")

    def v2_runner_on_skipped(self, result):
        self._record(result, "skipped")

    def v2_runner_on_unreachable(self, result):
        self._record(result, "unreachable")

    def v2_playbook_on_stats(self, stats):
        now = time.time()
        self._close_last(now)
        if not self._path:
            return
        summary = {}
        for host in sorted(stats.processed):
            summary[host] = stats.summarize(host)
        with open(self._path, "w", encoding="utf-8") as fh:
            json.dump({"started": self._started, "ended": now, "plays": self._plays,
                       "tasks": self._tasks, "stats": summary}, fh)
