#!/usr/bin/env bash
# Instructions Redis spends per job in each of jobforge's scripts, counted by callgrind
# (steady from run to run, unlike wall time on a shared machine):
#
#   cargo build --release --features full --bin jobforge-bench
#   bash benches/redis_scripts/instructions.sh [target/release/jobforge-bench] [jobs]
#
# It starts a private redis-server under `valgrind --tool=callgrind` (port 6395, nothing
# kept on disk), runs one burn-down at concurrency 32 against it, and dumps the counters
# before every EVALSHA, so each dump holds one script call. A call is named by the commands
# it ran: LPOP (settle_claim, the drain), ZRANGEBYLEX (list, the bench reading the records
# back), PUBLISH with ZADD (create); the rest is "other".
#
# Naming calls needs the command functions' symbols: Debian's redis-server exports them. A
# build whose binary does not counts every call as "other" (the total still holds); build one
# from the same release for a profile by C function as well:
#   git clone https://github.com/redis/redis && cd redis && git checkout 7.0.15
#   make -j2 MALLOC=libc && REDIS_BIN=$PWD/src/redis-server bash .../instructions.sh
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
bench="${1:-$root/target/release/jobforge-bench}"
jobs="${2:-5000}"
redis="${REDIS_BIN:-redis-server}"
port="${PORT:-6395}"
command -v valgrind > /dev/null || { echo "valgrind is needed" >&2; exit 1; }
[ -x "$bench" ] || { echo "no bench binary at $bench (cargo build --release --features full --bin jobforge-bench)" >&2; exit 1; }
dir="$(mktemp -d)"
trap 'redis-cli -p "$port" shutdown nosave > /dev/null 2>&1 || true; rm -rf "$dir"' EXIT
valgrind --tool=callgrind --dump-before=evalShaCommand --callgrind-out-file="$dir/cg" \
    "$redis" --port "$port" --save '' --appendonly no > "$dir/valgrind.log" 2>&1 &
vg=$!
for _ in $(seq 1 100); do redis-cli -p "$port" ping > /dev/null 2>&1 && break; sleep 0.2; done
redis-cli -p "$port" ping > /dev/null || { echo "redis-server did not start under valgrind" >&2; cat "$dir/valgrind.log" >&2; exit 1; }
"$bench" --store "redis://127.0.0.1:$port" --jobs "$jobs" --chunk 1000 --concurrency 32 > "$dir/bench.log" 2>&1 \
    || { cat "$dir/bench.log" >&2; exit 1; }
redis-cli -p "$port" shutdown nosave > /dev/null 2>&1 || true
wait "$vg" || true
python3 - "$dir" "$jobs" <<'PY'
import collections, os, re, sys
d, jobs = sys.argv[1], int(sys.argv[2])
total, calls = collections.Counter(), collections.Counter()
for name in os.listdir(d):
    if not name.startswith("cg"):
        continue
    text = open(os.path.join(d, name), errors="replace").read()
    m = re.search(r"^(?:summary|totals): (\d+)", text, re.M)
    if not m:
        continue
    if "lpopCommand" in text:
        kind = "settle_claim"
    elif "zrangebylexCommand" in text:
        kind = "list"
    elif "publishCommand" in text and "zaddCommand" in text:
        kind = "create"
    else:
        kind = "other"
    total[kind] += int(m.group(1))
    calls[kind] += 1
print(f"instructions per job ({jobs} jobs), by script:")
for kind in ("settle_claim", "create", "list", "other"):
    if calls[kind]:
        print(f"  {kind:<13} {total[kind] / jobs:>9,.0f}   ({calls[kind]} calls)")
print(f"  {'all':<13} {sum(total.values()) / jobs:>9,.0f}")
PY
