"""The run: which rows to measure, and measuring them.

:func:`plan_rows` keeps the (scenario, backend) rows whose server and framework the
interpreter has. :class:`BenchRun` starts one nginx for all rows, then goes through the
scenarios in groups that share backend processes (same app family and worker count;
a memory scenario is a group of its own, on fresh processes): start the group's
backends, check the first scenario's rows, read their idle memory (before the other rows'
checks: a 1 MiB response would stay in it), check the rest, then per scenario either the
throughput rounds (a warm-up run per row, then ``--rounds`` x one run per row, A B C C B A)
or the memory requests (a few big requests per row, one at a time, with the worker's RSS
sampled), then the memory after. With ``--variant`` (variants.py), each gateway row is
one row per variant, on processes of its own. Every other round runs the rows in reverse
order, so that no row always runs first (or right after the same other row). :func:`run`
is the whole of it, for ``main``.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import tempfile
import time
from pathlib import Path

from . import APPS
from .backends import APPS_BY_FAMILY, BACKEND, BACKENDS, PROJECT_ROWS, REFERENCE, backend_command
from .environment import backend_env, compile_sources, machine_info, probe
from .load import Load, check_response, memory_request
from .nginx import find_nginx, nginx_errors_by_port, start_nginx
from .procs import (
    Instance,
    PeakWatch,
    RssReading,
    RssSampler,
    cpu_seconds,
    cpu_times,
    rss_reading,
    stop_group,
)
from .results import Row
from .scenarios import (
    MEMORY_BYTES,
    MEMORY_REQUESTS,
    MEMORY_TIMEOUT_S,
    SCENARIO,
    Scenario,
    app_for,
    startup_check,
)

#: backend, app, workers, own scenario ("" when shared), variant ("" without variants)
InstanceKey = tuple[str, str, int, str, str]


def plan_rows(args: argparse.Namespace, available: dict[str, bool]) -> tuple[list[Scenario], list[Row]]:
    """The (scenario, backend) rows to measure; rows whose server or framework is not
    installed are left out (and listed). A gateway row is one row per ``args.variants``."""
    scenarios = [SCENARIO[n] for n in args.scenarios]
    rows, skipped = [], []
    for sc in scenarios:
        for name in sc.backends:
            if args.only and name not in args.only:
                continue
            backend = BACKEND[name]
            app = app_for(sc, backend)
            if app is None:
                continue
            needs = [*backend.requires, *APPS_BY_FAMILY[sc.family][1]]
            missing = [n for n in needs if not available.get(n)]
            if missing:
                skipped.append(f"{sc.name}/{name} ({', '.join(missing)} not installed)")
                continue
            workers = sc.workers if backend.multiprocess else 1
            variants = [v.label for v in args.variants] if name in PROJECT_ROWS else []
            for variant in variants or [""]:
                shape = (backend.protocol, backend.interface, workers, sc.keep_conn, app)
                rows.append(Row(sc.name, name, *shape, variant=variant))
    if skipped:
        print("not measured:", "; ".join(skipped), flush=True)
    return [s for s in scenarios if any(r.scenario == s.name for r in rows)], rows


def group_key(sc: Scenario) -> tuple[str, int, str]:
    """Adjacent scenarios with the same key run on the same backend processes."""
    return (sc.family, sc.workers, sc.name if sc.own_processes else "")


def record_memory(row: Row, idle: RssReading, peak: PeakWatch, after: RssReading) -> None:
    """The row's memory fields from the idle and the final reading and the peak since idle
    (``row.rss_worker_peak_mib`` may already hold a sampled peak)."""
    row.processes = after.processes
    row.rss_total_idle_mib, row.rss_total_after_mib = idle.total_mib, after.total_mib
    row.rss_worker_idle_mib, row.rss_worker_after_mib = idle.worker_mib, after.worker_mib
    seen = [v for v in (row.rss_worker_peak_mib, peak.peak_mib(), after.worker_mib) if v is not None]
    row.rss_worker_peak_mib = max(seen) if seen else None
    if row.rss_worker_peak_mib is not None and idle.worker_mib is not None:
        row.rss_worker_growth_mib = row.rss_worker_peak_mib - idle.worker_mib


class BenchRun:
    """One run: the backends of each scenario group, one nginx in front of all of them."""

    def __init__(
        self, args: argparse.Namespace, rows: list[Row], scenarios: list[Scenario], client: str
    ) -> None:
        self.args = args
        self.rows = rows
        self.scenarios = scenarios
        self.tmp = Path(tempfile.mkdtemp(prefix="fcgi-bench-"))
        (self.tmp / "sock").mkdir()
        (self.tmp / "logs").mkdir()
        self.env = backend_env(args.project, self.tmp / "data")
        self.load = Load(client, self.tmp)
        self.error_log = self.tmp / "nginx" / "error.log"
        self.ports: dict[tuple[str, str], int] = {}
        # One process (tree) per (backend, app, workers, variant): scenarios of one group share it.
        self.instances: dict[InstanceKey, Instance] = {}
        variant_args = {v.label: v.args for v in args.variants}
        for row in rows:
            key = self._key(row)
            if key not in self.instances:
                n = len(self.instances)
                sock = str(self.tmp / "sock" / f"{n}.sock")
                extra = (*args.gateway_args, *variant_args.get(row.variant, ()))
                backend = BACKEND[row.backend]
                cmd = backend_command(backend, args.python, sock, row.app, row.workers, extra)
                log = self.tmp / "logs" / f"{n}-{row.label.replace('/', '-')}.log"
                inst = Instance(backend, row.app, row.workers, sock, cmd, log, variant=row.variant)
                self.instances[key] = inst
            row.command = self.instances[key].command

    @staticmethod
    def _key(row: Row) -> InstanceKey:
        own = SCENARIO[row.scenario].own_processes
        return (row.backend, row.app, row.workers, row.scenario if own else "", row.variant)

    def _pid(self, row: Row) -> int:
        proc = self.instances[self._key(row)].proc
        assert proc is not None
        return proc.pid

    def execute(self, nginx: str) -> None:
        nginx_proc = None
        try:
            plan = [(SCENARIO[r.scenario], self.instances[self._key(r)]) for r in self.rows]
            nginx_proc, self.ports = start_nginx(nginx, self.tmp, plan)
            groups: list[list[Scenario]] = []
            for sc in self.scenarios:
                if groups and group_key(groups[-1][0]) == group_key(sc):
                    groups[-1].append(sc)
                else:
                    groups.append([sc])
            for group in groups:
                self.measure_group(group)
        finally:
            for inst in self.instances.values():
                if inst.proc is not None and inst.proc.poll() is None:
                    stop_group(inst.proc)
            if nginx_proc is not None:
                stop_group(nginx_proc)
            if self.args.keep_tmp:
                print(f"kept {self.tmp} (nginx config and logs, backend logs)")
            else:
                shutil.rmtree(self.tmp, ignore_errors=True)
        for sc in self.scenarios:
            mine = [r for r in self.rows if r.scenario == sc.name]
            ref = next((r.rps for r in mine if r.backend == REFERENCE and r.rps), None)
            for r in mine:
                if r.rps is not None and ref:
                    r.ratio_to_uwsgi = r.rps / ref

    def measure_group(self, group: list[Scenario]) -> None:
        """Start the group's backends, check that each row answers right, read their idle
        memory, then each scenario's rounds (or memory requests) and the memory after."""
        names = {s.name for s in group}
        rows = [r for r in self.rows if r.scenario in names]
        running = list({id(i): i for i in (self.instances[self._key(r)] for r in rows)}.values())
        print(f"\n== {', '.join(s.name for s in group)}: starting {len(running)} backends", flush=True)
        for inst in running:
            inst.start(self.env)
        try:
            # The idle reading follows the first scenario's start-up checks only: the others'
            # (a 1 MiB response, a 10 MB upload) would leave their buffers in it.
            first = [r for r in rows if r.scenario == group[0].name]
            self._start_up(first, running)
            idle: dict[int, RssReading] = {}
            peaks: dict[int, PeakWatch] = {}
            for inst in running:
                if not inst.error and inst.proc is not None:
                    idle[id(inst)] = rss_reading(inst.proc.pid)
                    peaks[id(inst)] = PeakWatch(inst.proc.pid)
            self._check_rows([r for r in rows if r.scenario != group[0].name], time.monotonic() + 60)
            for sc in group:
                live = [r for r in rows if r.scenario == sc.name and r.status == "ok"]
                if live and sc.kind == "memory":
                    self.measure_memory(sc, live)
                elif live:
                    self.measure_scenario(sc, live)
                for r in live:
                    inst = self.instances[self._key(r)]
                    record_memory(r, idle[id(inst)], peaks[id(inst)], rss_reading(self._pid(r)))
                    r.summarize()
        finally:
            for inst in running:
                if inst.proc is not None:
                    stop_group(inst.proc)

    def _start_up(self, rows: list[Row], running: list[Instance]) -> None:
        """Wait until every backend listens, then check ``rows``."""
        deadline = time.monotonic() + self.args.startup_timeout
        for inst in running:
            try:
                inst.wait_listening(deadline)
            except RuntimeError as exc:
                inst.error = str(exc)
                print(f"!! {inst.backend.name} ({inst.app}) {exc}:\n{inst.log_tail()}", flush=True)
        self._check_rows(rows, deadline)

    def _check_rows(self, rows: list[Row], deadline: float) -> None:
        """The start-up request of each row: a row that answers wrong is not measured."""
        for row in rows:
            inst = self.instances[self._key(row)]
            if inst.error:
                row.status = "failed to start"
                continue
            port = self.ports[(row.scenario, row.label)]
            try:
                check = startup_check(SCENARIO[row.scenario])
                check_response(port, check, max(5.0, deadline - time.monotonic()))
            except RuntimeError as exc:
                row.status = "failed the start-up check"
                print(f"!! {row.scenario}/{row.label}: {exc}\n{inst.log_tail()}", flush=True)

    def measure_scenario(self, sc: Scenario, rows: list[Row]) -> None:
        """A warm-up run per row, then ``--rounds`` rounds of one run per row, every other
        round in reverse order (A B C C B A ...)."""
        print(f"-- {sc.name}: {sc.description}", flush=True)
        mark = self.error_log.stat().st_size if self.error_log.exists() else 0
        self._warm_up(sc, rows)
        for n in range(self.args.rounds):
            if n and self.args.fresh:
                self._restart(sc, rows)
            for r in rows[::-1] if n % 2 else rows:
                pid = self._pid(r)
                user, system = cpu_times(pid)
                sample = self.load.run(self.ports[(sc.name, r.label)], sc, self.args.seconds, self.args.conns)
                user2, system2 = cpu_times(pid)
                kernel_s = system2 - system
                sample.cpu_s = user2 - user + kernel_s
                r.samples.append(sample)
                err = sample.non2xx + sample.socket_errors
                note = f"  {err} errors" if err else ""
                cpu_us = ""
                if sample.requests:  # with the kernel's share: system time (the rest is user time)
                    kernel = f" ({100 * kernel_s / sample.cpu_s:.0f}% system)" if sample.cpu_s else ""
                    cpu_us = f"{sample.cpu_s / sample.requests * 1e6:8.1f} us CPU/req{kernel}"
                print(f"   round {n + 1}  {r.label:28} {sample.rps:9.0f} req/s {cpu_us}{note}", flush=True)
        self._nginx_errors(sc, rows, mark)

    def _restart(self, sc: Scenario, rows: list[Row]) -> None:
        """``--fresh``: new processes for ``rows`` before a round (stopped, their socket
        removed, started and warmed up again). A process's memory layout and hash seed move
        its CPU time per request by several percent for as long as it lives, so rounds on
        the same processes all lean the same way; new ones each round average that out."""
        deadline = time.monotonic() + self.args.startup_timeout
        for r in rows:
            inst = self.instances[self._key(r)]
            if inst.proc is not None:
                stop_group(inst.proc)
            Path(inst.sock).unlink(missing_ok=True)
            inst.start(self.env)
        print(f"   new processes: {', '.join(r.label for r in rows)}", flush=True)
        for r in rows:
            self.instances[self._key(r)].wait_listening(deadline)
        self._warm_up(sc, rows)

    def _warm_up(self, sc: Scenario, rows: list[Row]) -> None:
        """One unmeasured run of ``--warmup`` seconds per row."""
        if self.args.warmup > 0:
            for r in rows:
                self.load.run(self.ports[(sc.name, r.label)], sc, self.args.warmup, self.args.conns)

    def measure_memory(self, sc: Scenario, rows: list[Row]) -> None:
        """No warm-up (the idle reading is before any big request); ``min(--rounds, 3)``
        rounds of one request per row, one at a time, the worker's RSS sampled meanwhile."""
        print(f"-- {sc.name}: {sc.description}", flush=True)
        mark = self.error_log.stat().st_size if self.error_log.exists() else 0
        for n in range(min(self.args.rounds, MEMORY_REQUESTS)):
            for r in rows:
                pid = self._pid(r)
                cpu = cpu_seconds(pid)
                with RssSampler(pid) as sampler:
                    sample, problem = memory_request(self.ports[(sc.name, r.label)], sc, MEMORY_TIMEOUT_S)
                sample.cpu_s = cpu_seconds(pid) - cpu
                r.samples.append(sample)
                peak = sampler.peak_mib
                if peak is not None:
                    r.rss_worker_peak_mib = max(r.rss_worker_peak_mib or 0.0, peak)
                took = "failed" if sample.p50_ms is None else f"{sample.p50_ms / 1000:6.2f} s"
                seen = "-" if peak is None else f"{peak:.1f} MiB"
                note = f"  !! {problem}" if problem else ""
                print(f"   request {n + 1}  {r.label:28} {took}, worker RSS up to {seen}{note}", flush=True)
        self._nginx_errors(sc, rows, mark)

    def _nginx_errors(self, sc: Scenario, rows: list[Row], mark: int) -> None:
        logged = nginx_errors_by_port(self.error_log, mark)
        for r in rows:
            r.nginx_errors = logged.get(self.ports[(sc.name, r.label)], 0)


def run(args: argparse.Namespace) -> list[Row]:
    nginx = find_nginx()
    if nginx is None:
        raise SystemExit("nginx is not installed (run without --no-install to install it)")
    client = args.client
    if client == "auto":
        client = "wrk" if shutil.which("wrk") else "python"
    wanted = {n for b in BACKENDS for n in b.requires}
    wanted |= {m for _, mods in APPS_BY_FAMILY.values() for m in mods}
    scenarios, rows = plan_rows(args, probe(args.python, sorted(wanted), args.project))
    if not rows:
        raise SystemExit(f"nothing to measure: no requested backend is installed for {args.python}")
    meta = args.meta = machine_info(args.python, nginx, client, args.project)
    compile_sources(args.python, args.project, APPS)
    if args.variants:  # label -> its gateway options; the first is the reference (variants.py)
        meta["variants"] = {v.label: shlex.join(v.args) for v in args.variants}
    if any(sc.kind == "memory" for sc in scenarios):
        meta["memory_requests"] = min(args.rounds, MEMORY_REQUESTS)  # per row of a memory scenario
        meta["memory_bytes"] = MEMORY_BYTES  # per request
    print(f"{meta['date']}: {meta['nproc']} CPUs ({meta['cpu']}), Python {meta['python']}, {meta['nginx']}")
    plan = f"{len(rows)} rows x {args.rounds} rounds x {args.seconds:g} s, {args.conns} connections"
    print(f"{plan}, {meta['client']}", flush=True)
    BenchRun(args, rows, scenarios, client).execute(nginx)
    return rows
