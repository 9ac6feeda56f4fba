#!/usr/bin/env python3
"""The console's pages with many jobs kept in PostgreSQL (issue 17's measurement).

Loads JOBS jobs (default 1,000,000) into a schema of its own through `jobforge-server`'s
batch API, lets a workers-only process run some of them (so there are succeeded, dead,
delayed and queued jobs of several kinds), then times every console page RUNS times (default
5) over HTTP and prints the median and the slowest per page. The schema is dropped at the end
unless KEEP=1.

    DATABASE_URL=postgres://postgres@127.0.0.1:5432/test \\
        python3 tests/load/console_pages.py [--server target/release/jobforge-server]

Standard library only. Each timing is one request from a warm keep-alive connection, the
page rendered in full (the store's reads included).
"""

import argparse
import http.client
import json
import os
import re
import statistics
import subprocess
import sys
import time
import urllib.parse


def run(cmd, **kw):
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw).stdout


def keygen(server):
    out = run([server, "keys", "generate"])
    key = re.search(r"jfk_[0-9a-f]+_[0-9a-f]+", out).group(0)
    key_id = re.search(r"key id:\s+(\S+)", out).group(1)
    digest = re.search(r"sha256:\s+(\S+)", out).group(1)
    return key, f"{key_id}:{digest}:admin"


def start(server, env, args, listens=True):
    proc = subprocess.Popen(
        [server, "--bind", "127.0.0.1:0", "--demo-handlers", *args],
        env=env, stdout=subprocess.PIPE, stderr=sys.stderr, text=True)
    line = proc.stdout.readline()
    if not listens:
        return proc, None
    m = re.search(r"http://127\.0\.0\.1:(\d+)", line)
    if not m:
        proc.kill()
        sys.exit(f"the server did not say where it listens: {line!r}")
    return proc, int(m.group(1))


class Client:
    def __init__(self, port, key):
        self.conn = http.client.HTTPConnection("127.0.0.1", port, timeout=120)
        self.key = key
        self.cookie = None

    def request(self, method, path, body=None, headers=None):
        h = dict(headers or {})
        if self.cookie:
            h["Cookie"] = self.cookie
        else:
            h["X-API-Key"] = self.key
        if body is not None and not isinstance(body, (bytes, str)):
            body = json.dumps(body)
            h["Content-Type"] = "application/json"
        self.conn.request(method, path, body=body, headers=h)
        r = self.conn.getresponse()
        data = r.read()
        return r.status, r.getheaders(), data

    def login(self):
        body = urllib.parse.urlencode({"key": self.key})
        self.conn.request("POST", "/ui/login", body=body,
                          headers={"Content-Type": "application/x-www-form-urlencoded"})
        r = self.conn.getresponse()
        r.read()
        cookie = r.getheader("Set-Cookie") or ""
        if r.status != 303 or not cookie:
            sys.exit(f"login failed: {r.status}")
        self.cookie = cookie.split(";")[0]


def mix(i):
    """The jobs: mostly echo, some sleep, some that fail for good, some delayed an hour."""
    r = i % 20
    if r < 12:
        return {"kind": "echo", "payload": {"n": i}}
    if r < 14:
        return {"kind": "sleep", "payload": {"ms": 1}, "queue": "slow"}
    if r < 15:
        return {"kind": "fail_n_times", "payload": {"permanent": True}, "max_attempts": 1}
    if r < 17:
        return {"kind": "echo", "payload": {"n": i}, "delay_ms": 3_600_000}
    return {"kind": "report", "payload": {"month": i % 12}, "queue": "reports"}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--server", default="target/release/jobforge-server")
    ap.add_argument("--jobs", type=int, default=int(os.environ.get("JOBS", 1_000_000)))
    ap.add_argument("--runs", type=int, default=int(os.environ.get("RUNS", 5)))
    ap.add_argument("--work-seconds", type=float, default=30.0)
    ap.add_argument("--schema", default=os.environ.get("SCHEMA", "jf_console_pages"))
    a = ap.parse_args()
    url = os.environ.get("DATABASE_URL")
    if not url:
        sys.exit("set DATABASE_URL (the PostgreSQL to measure on)")
    env = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
    env.update({"DATABASE_URL": url, "JOBFORGE_PG_SCHEMA": a.schema, "RUST_LOG": "warn"})
    key, spec = keygen(a.server)
    limits = ["--rate-limit-ip", "100000/s:100000", "--rate-limit-read", "100000/s:100000",
              "--rate-limit-write", "100000/s:100000", "--rate-limit-admin", "100000/s:100000"]
    api, port = start(a.server, env, ["--no-workers", "--allow-unknown-kinds",
                                      "--api-key-hash", spec, *limits])
    try:
        c = Client(port, key)
        t0 = time.monotonic()
        chunk = 1_000
        for start_at in range(0, a.jobs, chunk):
            jobs = [mix(i) for i in range(start_at, min(start_at + chunk, a.jobs))]
            status, _, body = c.request("POST", "/v1/jobs/batch", {"jobs": jobs})
            if status not in (200, 201):
                sys.exit(f"batch at {start_at}: {status} {body[:300]!r}")
            if start_at % 100_000 == 0:
                print(f"  loaded {start_at:,} jobs", file=sys.stderr)
        load_s = time.monotonic() - t0
        print(f"loaded {a.jobs:,} jobs in {load_s:.0f} s", file=sys.stderr)
        quiet = dict(env, RUST_LOG="error")  # (every dead job logs a warning)
        workers, _ = start(a.server, quiet, ["--workers-only", "--api-key-hash", spec],
                           listens=False)
        time.sleep(a.work_seconds)
        workers.terminate()
        workers.wait(timeout=60)
        # The shared CI server runs with autovacuum off; a stock server's autovacuum would
        # have visited these tables after a million inserts (and the visibility map is what
        # lets counts read indexes alone). VACUUM stands in for it.
        if os.environ.get("NO_VACUUM") != "1":
            tables = ", ".join(f"{a.schema}.{t}" for t in
                               ("jobs", "job_events", "job_counts", "memory_executions"))
            run(["psql", url, "-q", "-c", f"VACUUM (ANALYZE) {tables}"])
        c.login()
        status, _, live = c.request("GET", "/ui/live")
        counts = json.loads(live)["counts"]
        print("jobs by state: " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
        _, _, html = c.request("GET", "/ui/jobs?order=asc")
        some = re.search(rb'data-id="([0-9a-f-]{36})"', html)
        job_id = some.group(1).decode() if some else ""
        _, _, html = c.request("GET", "/ui/jobs")
        nxt = re.search(rb'id="next-page" href="([^"]+)"', html)
        next_page = nxt.group(1).decode().replace("&amp;", "&") if nxt else "/ui/jobs"
        pages = [
            ("overview", "/ui"),
            ("live counts", "/ui/live"),
            ("jobs, newest", "/ui/jobs"),
            ("jobs, next page", next_page),
            ("jobs, queued", "/ui/jobs?state=queued"),
            ("jobs, succeeded echo", "/ui/jobs?state=succeeded&kind=echo"),
            ("jobs, dead", "/ui/jobs?state=dead"),
            ("jobs, matching none", "/ui/jobs?state=succeeded&kind=sleep"),
            ("jobs, queue reports", "/ui/jobs?queue=reports"),
            ("jobs, oldest", "/ui/jobs?order=asc"),
            ("a job", f"/ui/jobs/{job_id}"),
            ("kinds", "/ui/kinds"),
            ("kind echo", "/ui/kinds/echo"),
            ("queues", "/ui/queues"),
            ("workflows", "/ui/workflows"),
        ]
        print(f"\n| page | median ms | slowest ms | status |\n|---|---:|---:|---|")
        worst = 0.0
        for name, path in pages:
            times = []
            status = 0
            for _ in range(a.runs):
                t = time.perf_counter()
                status, _, _ = c.request("GET", path)
                times.append((time.perf_counter() - t) * 1e3)
            med = statistics.median(times)
            worst = max(worst, med)
            print(f"| {name} (`{path[:60]}`) | {med:.1f} | {max(times):.1f} | {status} |")
        print(f"\nslowest median: {worst:.1f} ms ({a.runs} runs per page)")
    finally:
        api.terminate()
        api.wait(timeout=60)
        if os.environ.get("KEEP") != "1":
            subprocess.run(["psql", url, "-q", "-c", f"DROP SCHEMA IF EXISTS {a.schema} CASCADE"],
                           check=False)


if __name__ == "__main__":
    main()
