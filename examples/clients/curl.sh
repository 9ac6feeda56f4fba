#!/usr/bin/env bash
# jobforge over HTTP with curl: submit jobs, poll them to completion, read the stats.
# Needs a server with the demo kinds:  jobforge-server --demo-handlers
# Usage: JOBFORGE_URL=http://127.0.0.1:8080 bash examples/clients/curl.sh
#        (with JOBFORGE_API_KEY=jfk_... when the server requires authentication)
set -euo pipefail
BASE="${JOBFORGE_URL:-http://127.0.0.1:8080}"
AUTH=()
if [ -n "${JOBFORGE_API_KEY:-}" ]; then AUTH=(-H "Authorization: Bearer $JOBFORGE_API_KEY"); fi
command -v curl >/dev/null || { echo "curl.sh: curl is not installed" >&2; exit 1; }
command -v python3 >/dev/null || { echo "curl.sh: python3 (to read JSON) is not installed" >&2; exit 1; }

json_field() { python3 -c 'import json,sys; v=json.load(sys.stdin); print(eval("v"+sys.argv[1]))' "$1"; }

submit() {
    # -f: fail on HTTP errors; the problem+json body is printed by --fail-with-body.
    curl -sS --fail-with-body "${AUTH[@]}" -X POST "$BASE/v1/jobs" -H 'content-type: application/json' -d "$1"
}

echo_job=$(submit '{"kind":"echo","payload":{"hello":"from curl"}}')
flaky_job=$(submit '{"kind":"fail_n_times","payload":{"times":1}}')
ids=("$(json_field '["id"]' <<<"$echo_job")" "$(json_field '["id"]' <<<"$flaky_job")")
echo "submitted ${ids[*]}"

for id in "${ids[@]}"; do
    for _ in $(seq 1 200); do
        job=$(curl -sS --fail-with-body "${AUTH[@]}" "$BASE/v1/jobs/$id")
        state=$(json_field '["state"]' <<<"$job")
        case "$state" in
            succeeded) echo "$id succeeded after $(json_field '["attempt"]' <<<"$job") attempt(s): $(json_field '["result"]' <<<"$job")"; break ;;
            dead|cancelled) echo "$id ended $state: $job" >&2; exit 1 ;;
        esac
        sleep 0.05
    done
    [ "$state" = succeeded ] || { echo "$id still $state" >&2; exit 1; }
done

# A schedule: declared (idempotently), triggered now, its job run, then removed.
curl -sS --fail-with-body "${AUTH[@]}" -X PUT "$BASE/v1/schedules/curl-hourly" -H 'content-type: application/json' \
    -d '{"cron":"0 * * * *","job":{"kind":"echo","payload":{"from":"a schedule"}}}' >/dev/null
triggered=$(curl -sS --fail-with-body "${AUTH[@]}" -X POST "$BASE/v1/schedules/curl-hourly/trigger")
scheduled_id=$(json_field '["job_id"]' <<<"$triggered")
for _ in $(seq 1 200); do
    state=$(curl -sS --fail-with-body "${AUTH[@]}" "$BASE/v1/jobs/$scheduled_id" | json_field '["state"]')
    [ "$state" = succeeded ] && break
    sleep 0.05
done
[ "$state" = succeeded ] || { echo "the triggered job $scheduled_id is $state" >&2; exit 1; }
next=$(curl -sS --fail-with-body "${AUTH[@]}" "$BASE/v1/schedules/curl-hourly" | json_field '["next_run_at"]')
echo "schedule curl-hourly: triggered job $scheduled_id succeeded; next tick $next"
curl -sS --fail-with-body "${AUTH[@]}" -X DELETE "$BASE/v1/schedules/curl-hourly"

# A workflow: charge, then ship and email in parallel, then close once both succeeded.
wf=$(curl -sS --fail-with-body "${AUTH[@]}" -X POST "$BASE/v1/workflows" -H 'content-type: application/json' -d '{
  "name": "curl-order",
  "steps": [
    {"name": "charge", "job": {"kind": "echo", "payload": {"cents": 1200}}},
    {"name": "ship", "after": ["charge"], "job": {"kind": "echo", "payload": "parcel"}},
    {"name": "email", "after": ["charge"], "job": {"kind": "echo", "payload": "receipt"}},
    {"name": "close", "after": ["ship", "email"], "job": {"kind": "echo", "payload": "closed"}}
  ]}')
wf_id=$(json_field '["id"]' <<<"$wf")
for _ in $(seq 1 200); do
    wf=$(curl -sS --fail-with-body "${AUTH[@]}" "$BASE/v1/workflows/$wf_id")
    [ "$(json_field '["finished"]' <<<"$wf")" = True ] && break
    sleep 0.05
done
[ "$(json_field '["counts"]["succeeded"]' <<<"$wf")" = 4 ] || { echo "workflow $wf_id: $wf" >&2; exit 1; }
echo "workflow $wf_id: 4 steps succeeded, close after $(json_field '["steps"][3]["after"]' <<<"$wf")"

stats=$(curl -sS --fail-with-body "${AUTH[@]}" "$BASE/v1/queues/stats")
echo "stats: ready=$(json_field '["ready"]' <<<"$stats") in_flight=$(json_field '["in_flight"]' <<<"$stats") succeeded=$(json_field '["jobs"]["succeeded"]' <<<"$stats")"
echo "curl client: OK"
