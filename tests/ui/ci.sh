# shellcheck shell=bash
# The operator console's browser checks, for .ci/run: `source tests/ui/ci.sh`, then
# `ui_checks "$CARGO_TARGET_DIR/debug/jobforge-server"` once the server binary is built.
#
# Uses the caller's `log`, `die` and `apt_install`. Starts its own in-memory jobforge-server
# with the demo kinds and two fresh API keys (an admin and a read-only one), runs
# tests/ui/console.mjs (playwright-core driving Debian's chromium; no browser download)
# against it, and stops the server. Screenshots: target/ui/; the server's log:
# target/ui-server.log.

UI_TESTS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

ui_checks() {
    local server=${1:?ui_checks: the jobforge-server binary is the first argument}
    [ -x "$server" ] || die "ui_checks: $server is not an executable jobforge-server"

    command -v curl >/dev/null 2>&1 || apt_install curl
    command -v node >/dev/null 2>&1 || apt_install nodejs
    command -v npm >/dev/null 2>&1 || apt_install npm
    command -v chromium >/dev/null 2>&1 || { log "installing chromium"; apt_install chromium; }
    node -e 'process.exit(Number(process.versions.node.split(".")[0]) >= 20 ? 0 : 1)' \
        || die "the console checks need Node.js 20 or newer (playwright-core); found $(node --version)"
    local chromium_bin
    chromium_bin=$(command -v chromium)

    # playwright-core from package-lock.json, reinstalled whenever the lock changes.
    local lockhash
    lockhash=$(sha256sum "$UI_TESTS_DIR/package-lock.json" | awk '{print $1}')
    if [ ! -d "$UI_TESTS_DIR/node_modules/playwright-core" ] \
        || [ "$(cat "$UI_TESTS_DIR/node_modules/.lockhash" 2>/dev/null)" != "$lockhash" ]; then
        log "ui: npm ci in tests/ui"
        (cd "$UI_TESTS_DIR" && npm ci --no-audit --no-fund) || die "npm ci in tests/ui failed"
        echo "$lockhash" >"$UI_TESTS_DIR/node_modules/.lockhash"
    fi

    # Two keys: the admin one acts, the read-only one must not be able to.
    local keygen admin_key admin_id admin_hash read_key read_id read_hash
    keygen=$("$server" keys generate) || die "jobforge-server keys generate failed"
    admin_key=$(grep -o 'jfk_[0-9a-f]*_[0-9a-f]*' <<<"$keygen" | head -n 1)
    admin_id=$(awk '/^key id:/ {print $3}' <<<"$keygen")
    admin_hash=$(awk '/^sha256:/ {print $2}' <<<"$keygen")
    [ -n "$admin_key" ] && [ -n "$admin_id" ] && [ -n "$admin_hash" ] || die "could not read the key from: $keygen"
    keygen=$("$server" keys generate) || die "jobforge-server keys generate failed"
    read_key=$(grep -o 'jfk_[0-9a-f]*_[0-9a-f]*' <<<"$keygen" | head -n 1)
    read_id=$(awk '/^key id:/ {print $3}' <<<"$keygen")
    read_hash=$(awk '/^sha256:/ {print $2}' <<<"$keygen")
    [ -n "$read_key" ] && [ -n "$read_id" ] && [ -n "$read_hash" ] || die "could not read the key from: $keygen"

    mkdir -p target
    local server_log=target/ui-server.log
    # In memory: the server must not pick up the Redis and PostgreSQL URLs .ci/run exports.
    env -u REDIS_URL -u DATABASE_URL RUST_LOG=warn \
        "$server" --bind 127.0.0.1:0 --demo-handlers \
        --api-key-hash "$admin_id:$admin_hash:admin,jobs:read,jobs:write" \
        --api-key-hash "$read_id:$read_hash:jobs:read,schedules:read" \
        --public-path /health \
        --rate-limit-ip 5000/s:10000 --rate-limit-read 5000/s:10000 \
        --rate-limit-write 5000/s:10000 --rate-limit-admin 5000/s:10000 \
        >"$server_log" 2>&1 &
    UI_SERVER_PID=$!
    trap 'kill "$UI_SERVER_PID" 2>/dev/null || true' EXIT
    local base=""
    for _ in $(seq 1 100); do
        base=$(grep -o 'http://127\.0\.0\.1:[0-9]*' "$server_log" | head -n 1 || true)
        [ -n "$base" ] && curl -fsS "$base/health" >/dev/null 2>&1 && break
        kill -0 "$UI_SERVER_PID" 2>/dev/null || { cat "$server_log"; die "jobforge-server exited at startup (console checks)"; }
        sleep 0.1
    done
    [ -n "$base" ] && curl -fsS "$base/health" >/dev/null || { cat "$server_log"; die "jobforge-server did not answer /health (console checks)"; }

    log "ui: the console in headless $("$chromium_bin" --version 2>/dev/null | head -n 1) at $base"
    rm -rf target/ui
    local status=0
    JOBFORGE_URL="$base" JOBFORGE_ADMIN_KEY="$admin_key" JOBFORGE_READ_KEY="$read_key" \
        CHROMIUM="$chromium_bin" UI_SCREENSHOTS=target/ui \
        node "$UI_TESTS_DIR/console.mjs" || status=$?

    kill "$UI_SERVER_PID" 2>/dev/null || true
    wait "$UI_SERVER_PID" 2>/dev/null || true
    trap - EXIT
    if [ "$status" != 0 ]; then
        log "ui: the server's log ($server_log)"
        tail -n 50 "$server_log" || true
        die "the console's browser checks failed (see above; screenshots in target/ui/, failure.png is the last page)"
    fi
    log "ui: console checks passed; screenshots in target/ui/"
}
