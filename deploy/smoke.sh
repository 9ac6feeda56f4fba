#!/usr/bin/env bash
# The smoke test of a deployment: submit a job, see a worker run it, read it back.
#
#   JOBFORGE_URL=http://127.0.0.1:8080 JOBFORGE_API_KEY=jfk_... deploy/smoke.sh
#
# Needs curl and python3 (for the JSON). Exits non-zero, saying why, unless the job succeeds
# within JOBFORGE_SMOKE_SECS (default 60) with its result.
set -euo pipefail
base=${JOBFORGE_URL:-http://127.0.0.1:8080}
key=${JOBFORGE_API_KEY:-}
secs=${JOBFORGE_SMOKE_SECS:-60}
auth=()
[ -n "$key" ] && auth=(-H "x-api-key: $key")

for _ in $(seq 1 "$secs"); do
    curl -fsS "$base/health" >/dev/null 2>&1 && break
    sleep 1
done
curl -fsS "$base/health" >/dev/null || { echo "smoke: $base/health does not answer" >&2; exit 1; }

marker="smoke-$(date +%s)-$$"
created=$(curl -fsS "${auth[@]}" -H 'content-type: application/json' \
    -d "{\"kind\": \"echo\", \"payload\": {\"marker\": \"$marker\"}}" "$base/v1/jobs") \
    || { echo "smoke: POST /v1/jobs failed" >&2; exit 1; }
id=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])' <<<"$created")
echo "smoke: submitted $id"
for _ in $(seq 1 "$secs"); do
    job=$(curl -fsS "${auth[@]}" "$base/v1/jobs/$id")
    state=$(python3 -c 'import json,sys; print(json.load(sys.stdin)["state"])' <<<"$job")
    if [ "$state" = succeeded ]; then
        JOB="$job" python3 - "$marker" <<'PY' || exit 1
import json, os, sys
job = json.loads(os.environ["JOB"])
if job.get("result", {}).get("marker") != sys.argv[1]:
    sys.exit(f"smoke: the job succeeded with result {job.get('result')!r}, not the payload back")
print(f"smoke: {job['id']} succeeded on attempt {job['attempt']} with its payload as result")
PY
        exit 0
    fi
    case "$state" in dead|cancelled) echo "smoke: the job ended $state: $job" >&2; exit 1;; esac
    sleep 1
done
echo "smoke: the job is still $state after ${secs}s (no worker running it?)" >&2
exit 1
