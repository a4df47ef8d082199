"""fcgi-gateway's benchmark harness: the gateway and its peers behind one nginx.

``bench/run`` (shell: finds Python >= 3.11) runs ``bench/bench.py`` (puts this package on
the path), which calls :func:`harness.cli.main`. One module per concern; imports point
one way (the package itself only holds the paths every module shares):

    backends.py     the rows: which servers, and the command line that serves an app
    scenarios.py    what each scenario requests, its sizes, and what a right answer is
    results.py      Sample (one load run) and Row (one scenario x backend, summarized)
    procs.py        backend processes: start/stop, CPU time, RSS (sum, largest worker, peak)
    nginx.py        the generated nginx config, starting nginx, its error log by port
    load.py         load clients: wrk (parsing its output), a Python fallback, the start-up
                    check, the few big requests of the memory scenarios
    environment.py  installing nginx/wrk/the venv, probing an interpreter, machine info
    runner.py       the run: plan the rows, start each group, interleave the rounds
    report.py       the table (terminal, Markdown) and the JSON file
    chart.py        the PNG chart (matplotlib)
    instructions.py --instructions: instructions per request under Valgrind (no timing)
    variants.py     --variant / --isolation-cost: the gateway rows once per set of options,
                    and each variant's per-round cost against the first
    cli.py          options and ``main``

Standard library only; matplotlib for ``--chart``, valgrind for ``--instructions``.
"""

from __future__ import annotations

from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent.parent
REPO = BENCH_DIR.parent
APPS = BENCH_DIR / "apps"
ENTRY = BENCH_DIR / "bench.py"  # what bench/run executes (and main re-executes inside the venv)
