#!/usr/bin/env bash
# The one command that runs parkd's whole test suite (unit + end-to-end) on a fresh Debian machine.
#
#   bash scripts/test.sh            # as root, or as a user for whom these packages are already installed
#
# 1. Installs what the e2e tests drive if missing (apt-get, non-interactive): SIPp, Kamailio, docker-compose,
#    Chromium, baresip, linphone-cli, SIPVicious, fail2ban (for fail2ban-regex), redis-server, redis-sentinel, openssl.
# 2. Builds the workspace binaries (the e2e tests start target/debug/parkd).
# 3. Runs `cargo test --workspace`: unit tests, then the e2e tests in sip-tests/ (each test starts its own
#    parkd on its own ports; logs land in target/e2e-logs/).
# Exits non-zero on any failure.
set -euo pipefail

cd "$(dirname "$0")/.."

# System packages the end-to-end tests drive, installed once here (tests running in parallel must not race for
# the dpkg lock): SIPp, Kamailio (proxy suite), docker-compose (checks docker-compose.yml; no engine needed),
# Chromium (the attendant-page test), baresip-core (real softphones in sip-tests/tests/baresip.rs), linphone-cli
# (linphonec over TLS+SRTP in sip-tests/tests/linphone_tls.rs; stdbuf from coreutils runs it), SIPVicious
# (svmap/svwar/svcrack in sip-tests/tests/scanners.rs), fail2ban (fail2ban-regex checks deploy/fail2ban's filter
# against parkd's log in sip-tests/tests/flood.rs; the daemon is not needed), Redis and its Sentinel (each test of
# sip-tests/tests/cluster_redis.rs starts its own redis-server on a loopback port; the Sentinel test runs
# `redis-server <conf> --sentinel`), openssl (makes the certificates of the rediss:// test).
need=()
command -v sipp >/dev/null 2>&1 || need+=(sip-tester)
command -v kamailio >/dev/null 2>&1 || [ -x /usr/sbin/kamailio ] || need+=(kamailio)
command -v docker-compose >/dev/null 2>&1 || need+=(docker-compose)
command -v chromium >/dev/null 2>&1 || need+=(chromium)
command -v baresip >/dev/null 2>&1 || need+=(baresip-core)
command -v linphonec >/dev/null 2>&1 || need+=(linphone-cli)
command -v svmap >/dev/null 2>&1 || need+=(sipvicious)
command -v fail2ban-regex >/dev/null 2>&1 || need+=(fail2ban)
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-sentinel >/dev/null 2>&1 || need+=(redis-sentinel)
command -v openssl >/dev/null 2>&1 || need+=(openssl)
if [ ${#need[@]} -gt 0 ]; then
    echo "==> installing: ${need[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: missing ${need[*]} and this is not root; run: apt-get install -y ${need[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
echo "==> $( { sipp -v 2>/dev/null || true; } | grep -m1 -o 'SIPp v[^ ]*' || true)"
echo "==> $( { baresip -h 2>&1 || true; } | grep -m1 -o 'baresip v[^ ]*' || true)"

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 1
fi

# A full debug build of the workspace and its tests takes about 2 GB; a link that runs out of disk fails with a
# bare "linking with cc failed", so say how much room there is first.
avail_kb=$(df -Pk . | awk 'NR==2 {print $4}')
echo "==> free disk here: $((avail_kb / 1024)) MB"
if [ "${avail_kb:-0}" -lt 3000000 ]; then
    echo "warning: less than 3 GB free; the build may fail to link (free space or set CARGO_TARGET_DIR)" >&2
fi

echo "==> cargo build --workspace --bins"
cargo build --workspace --bins

echo "==> cargo test --workspace --no-fail-fast"
# --no-fail-fast: one failing suite does not hide the others' results (the exit code still says it failed).
cargo test --workspace --no-fail-fast "$@"
