#!/usr/bin/env bash
# jobforge beside its peers, at the peers' settings, in one run (see README.md):
#   bash benches/peers/run.sh            # 3 runs of each, medians
#   RUNS=1 JOBS=2000 bash benches/peers/run.sh
# Needs Node.js and npm, DATABASE_URL and REDIS_URL (servers on this host).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
runs="${RUNS:-3}"
export JOBS="${JOBS:-20000}" CHUNK="${CHUNK:-1000}" CONCURRENCY="${CONCURRENCY:-32}"
: "${DATABASE_URL:?set DATABASE_URL, e.g. postgres://postgres@127.0.0.1:5432/test}"
: "${REDIS_URL:?set REDIS_URL, e.g. redis://127.0.0.1:6379}"
command -v node > /dev/null || { echo "Node.js is needed for the peers" >&2; exit 1; }

echo "==> installing the peers (package-lock.json)" >&2
(cd "$here" && npm ci --no-audit --no-fund --loglevel=error > /dev/null)
echo "==> building jobforge-bench (release)" >&2
(cd "$root" && cargo build --release --features full --bin jobforge-bench -q)
bench="${CARGO_TARGET_DIR:-$root/target}/release/jobforge-bench"

# Before every run, jobforge's and each peer's alike: wait (at most 30 s) until the machine
# is quiet, at least 85% idle over a second. The store servers share its cores, and after a
# run PostgreSQL's autovacuum and checkpointer work on what the run left: whoever ran next
# would be measured against them.
quiet() {
    local tries=0 a b
    while [ $tries -lt 30 ]; do
        a=($(head -1 /proc/stat)); sleep 1; b=($(head -1 /proc/stat))
        local total=0 idle i
        for i in 1 2 3 4 5 6 7 8; do total=$((total + b[i] - a[i])); done
        idle=$(( (b[4] - a[4]) + (b[5] - a[5]) ))
        [ "$total" -gt 0 ] && [ $((idle * 100 / total)) -ge 85 ] && return 0
        tries=$((tries + 1))
    done
    echo "    (the machine stayed busy for 30 s; running anyway)" >&2
}

results="$(mktemp)"
trap 'rm -f "$results"' EXIT
for run in $(seq 1 "$runs"); do
    for mode in backlog streaming; do
        jf_mode=$([ "$mode" = backlog ] && echo burn-down || echo streaming)
        for store in memory postgres redis; do
            case $store in
                memory) url=() ;;
                postgres) url=(--store "$DATABASE_URL") ;;
                redis) url=(--store "$REDIS_URL") ;;
            esac
            quiet
            echo "==> run $run/$runs: jobforge $store $mode" >&2
            json="$(mktemp)"
            "$bench" "${url[@]}" --mode "$jf_mode" --jobs "$JOBS" --chunk "$CHUNK" \
                --concurrency "$CONCURRENCY" --json "$json" > /dev/null
            python3 -c 'import json,sys; r=json.load(open(sys.argv[1])); print(json.dumps({"peer": "jobforge", "store": sys.argv[2], "mode": sys.argv[3], "jobs_per_s": r["jobs_per_s"]}))' \
                "$json" "$store" "$mode" >> "$results"
            rm -f "$json"
        done
        for peer in bullmq pgboss graphile; do
            store=$([ "$peer" = bullmq ] && echo redis || echo postgres)
            quiet
            echo "==> run $run/$runs: $peer $mode" >&2
            (cd "$here" && MODE=$mode node "$peer.mjs") \
                | python3 -c 'import json,sys; r=json.loads(sys.stdin.read().strip().splitlines()[-1]); r["store"]=sys.argv[1]; print(json.dumps(r))' "$store" \
                >> "$results"
        done
    done
done

python3 - "$results" "$runs" <<'PY'
import json, statistics, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
runs = sys.argv[2]
med = {}
for r in rows:
    med.setdefault((r["store"], r["mode"], r["peer"]), []).append(r["jobs_per_s"])
def m(store, mode, peer):
    v = med.get((store, mode, peer))
    return statistics.median(v) if v else None
print(f"| store, mode (median of {runs}) | jobforge | peers | jobforge / best peer |")
print("|---|---:|---|---:|")
for store, peers in (("postgres", ("graphile-worker", "pg-boss")), ("redis", ("bullmq",)), ("memory", ())):
    for mode in ("backlog", "streaming"):
        jf = m(store, mode, "jobforge")
        found = [(p, m(store, mode, p)) for p in peers if m(store, mode, p)]
        best = max((v for _, v in found), default=None)
        peer_text = ", ".join(f"{p} {v:,.0f}" for p, v in found) or "-"
        ratio = f"{jf / best:.1f}x" if jf and best else "-"
        print(f"| {store}, {mode} | {jf:,.0f} | {peer_text} | {ratio} |")
PY
