#!/usr/bin/env python3
"""A/B of the verify path: CPU per check of several builds of the server, beside the floor.

    python bench/ab.py --rev 001006c --rev HEAD              # two commits, 6 rounds of 5 s
    python bench/ab.py --rev HEAD --rev HEAD --rounds 8      # the noise: one build twice
    python bench/ab.py --rev HEAD --setting off=LICENSE_SERVER_RATE_LIMIT_ENABLED=false --mix

Each `--rev` is checked out (`git worktree add --detach`) into the run's temporary directory
and served from there (`run.py serve`, with this checkout's virtualenv: the revisions must
need the same packages); each `--setting NAME=VAR=VALUE` serves the working tree with one
more environment variable (repeat a NAME to give it several). Every server runs on its own
copy of `bench/verify.py`'s seeded database, with that script's production defaults
(`_server_env`), beside `bench/floor_server.py`. Then, round after round, each is driven in
turn by wrk for `--duration` seconds with the hot key (or `--mix`: 1,000 keys), and its CPU
time per check is read from /proc.

Why interleaved rounds: on a shared machine the speed drifts within minutes (this one's floor
moved from 127 to 184 µs per check within an hour), and two starts of one build differ by up
to ±10 µs. Measuring every build once per round, the floor included, puts all of them under
the same drift; the report gives each build's median, its ratio to the floor's median, and
the median of its per-round ratios to the floor (paired). A difference smaller than what
`--rev X --rev X` shows is noise. The figures of issue #16's rounds 5 and 6 in bench/README
were measured this way.
"""

from __future__ import annotations

import argparse
import shutil
import signal
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import verify as bench  # bench/verify.py: the dataset, the servers, wrk, CPU from /proc

ROOT = bench.ROOT


@dataclass
class Build:
    name: str
    root: Path  # the checkout whose run.py serves it (or bench/floor_server.py, for the floor)
    env: dict[str, str] = field(default_factory=dict)
    floor: bool = False
    server: bench.Server | None = None
    url: str = ""
    runs: list[bench.Measurement] = field(default_factory=list)  # one per round


def _worktree(rev: str, workdir: Path, index: int) -> Path:
    target = workdir / f"rev-{index}"
    done = subprocess.run(
        ["git", "-C", str(ROOT), "worktree", "add", "--detach", "--quiet", str(target), rev],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise bench.BenchError(f"--rev {rev}: {done.stderr.strip() or 'git worktree failed'}")
    return target


def _remove_worktrees(paths: list[Path]) -> None:
    for path in paths:
        subprocess.run(
            ["git", "-C", str(ROOT), "worktree", "remove", "--force", str(path)],
            check=False,
            capture_output=True,
        )


def _settings(specs: list[str]) -> dict[str, dict[str, str]]:
    """`NAME=VAR=VALUE` specs as {name: {var: value}}."""
    named: dict[str, dict[str, str]] = {}
    for spec in specs:
        name, _, assignment = spec.partition("=")
        variable, equals, value = assignment.partition("=")
        if name in ("", "floor") or not equals or not variable.startswith("LICENSE_SERVER_"):
            raise bench.BenchError(
                f"--setting {spec!r}: expected NAME=LICENSE_SERVER_...=VALUE (NAME not 'floor')"
            )
        named.setdefault(name, {})[variable] = value
    return named


def _start(build: Build, index: int, dataset: bench.Dataset, workdir: Path, hot: Path) -> None:
    port = bench._free_port()
    # Files by index: a build's name holds a revision, which may hold a "/".
    database, log = workdir / f"build-{index}.db", workdir / f"build-{index}.log"
    build.url = f"http://127.0.0.1:{port}{bench.VERIFY_PATH}"
    if build.floor:
        argv = [sys.executable, str(ROOT / "bench" / "floor_server.py"), "--port", str(port)]
        build.server = bench.Server(build.name, [*argv, "--database", str(database)], {}, log)
        body = hot.read_text().strip().encode()
        build.server.wait_until(lambda: bench._http("POST", build.url, body)[0] == 200)
        return
    for suffix in ("", "-wal"):  # each build logs its attempts into its own copy
        source = Path(f"{dataset.database}{suffix}")
        if source.exists():
            shutil.copy2(source, f"{database}{suffix}")
    env = {**bench._server_env(database, dataset.keys_dir, port), **build.env}
    argv = [sys.executable, str(build.root / "run.py"), "serve"]
    build.server = bench.Server(build.name, argv, env, log)
    ready = f"http://127.0.0.1:{port}/readyz"
    build.server.wait_until(lambda: bench._http("GET", ready)[0] == 200)
    bench.check_active(build.url, [dataset.sample[0]])


def _measure(build: Build, bodies: Path, seconds: int, connections: int) -> str:
    assert build.server is not None
    result = bench.timed_wrk(build.server, build.url, bodies, seconds, connections)
    build.runs.append(result)
    cpu = "n/a" if result.cpu_us is None else f"{result.cpu_us:6.1f} µs/check"
    return f"  {build.name:<16}{result.requests_per_s:>10,.0f} req/s   CPU {cpu}"


def report(builds: list[Build]) -> None:
    """Each build's median CPU per check, ÷ the floor's median, and paired: the median of
    its rounds' own ratios to the floor's measurement of the same round."""
    floor = bench.summary(builds[-1].runs)
    if floor.cpu_us is None:
        print("CPU per check: n/a (no /proc to read CPU times from)")
        return
    print()
    print(f"{'':<18}{'CPU/check':>12}{'÷ floor':>10}{'paired':>10}{'req/s':>10}")
    for build in builds:
        median = bench.summary(build.runs)
        paired = bench.paired_cpu(build.runs, builds[-1].runs)
        if median.cpu_us is None or paired is None:
            print(f"{build.name:<18}{'n/a':>12}")
            continue
        ratio = median.cpu_us / floor.cpu_us
        print(
            f"{build.name:<18}{median.cpu_us:>9.1f} µs{ratio:>10.2f}{paired:>10.2f}"
            f"{median.requests_per_s:>10,.0f}"
        )


def run(args) -> None:
    if shutil.which("wrk") is None:
        raise bench.BenchError("wrk is not installed (apt-get install wrk)")
    sys.path.insert(0, str(ROOT))
    workdir = Path(tempfile.mkdtemp(prefix="verify-ab-"))
    worktrees: list[Path] = []
    builds: list[Build] = []
    try:
        for index, rev in enumerate(args.rev):
            worktrees.append(_worktree(rev, workdir, index))
            builds.append(Build(f"{index + 1}: {rev}"[:16], worktrees[-1]))
        for name, env in _settings(args.setting).items():
            builds.append(Build(name[:16], ROOT, env))
        if not builds:
            raise bench.BenchError("nothing to compare: give --rev and/or --setting")
        builds.append(Build("floor", ROOT, floor=True))
        cache = None if args.no_cache else args.cache_dir
        print(f"preparing a database of {args.licenses:,} licenses ...", flush=True)
        dataset = bench.prepare_dataset(args.licenses, cache, workdir)
        hot, mix = workdir / "hot.txt", workdir / "mix.txt"
        hot.write_text(bench._body(*dataset.sample[0]) + "\n")
        mix.write_text("".join(bench._body(k, d) + "\n" for k, d in dataset.sample))
        bodies = mix if args.mix else hot
        for index, build in enumerate(builds):
            _start(build, index, dataset, workdir, hot)
            bench.run_wrk(build.url, bodies, args.warmup, args.connections)
        load = f"{len(dataset.sample):,} keys" if args.mix else "the hot key"
        print(
            f"{load}, {args.connections} connections, {args.rounds} rounds of {args.duration} s "
            "per build, interleaved"
        )
        for number in range(1, args.rounds + 1):
            print(f"round {number} of {args.rounds}", flush=True)
            for build in builds:
                print(_measure(build, bodies, args.duration, args.connections), flush=True)
        report(builds)
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl+C must not leave servers
        for build in builds:
            if build.server is not None:
                build.server.stop()
        _remove_worktrees(worktrees)
        shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", action="append", default=[], help="a git revision to serve")
    parser.add_argument(
        "--setting",
        action="append",
        default=[],
        metavar="NAME=VAR=VALUE",
        help="serve the working tree as build NAME with one more LICENSE_SERVER_* variable",
    )
    parser.add_argument("--rounds", type=bench._positive, default=6)
    parser.add_argument("--duration", type=bench._positive, default=5, help="seconds per build")
    parser.add_argument("--warmup", type=bench._positive, default=3, help="seconds, once each")
    parser.add_argument("--connections", type=bench._positive, default=32)
    parser.add_argument("--mix", action="store_true", help="1,000 keys in turn, not one")
    parser.add_argument("--licenses", type=bench._positive, default=bench.BASE_LICENSES)
    parser.add_argument("--cache-dir", type=Path, default=bench.DEFAULT_CACHE)
    parser.add_argument("--no-cache", action="store_true", help="seed afresh, keep nothing")
    return parser.parse_args(argv)


def main(argv=None) -> int:
    return bench.run_main("bench/ab.py", run, parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
