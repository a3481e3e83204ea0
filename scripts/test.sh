#!/usr/bin/env bash
# The one command that runs parkd's whole test suite (unit + end-to-end) on a fresh Debian machine.
#
#   bash scripts/test.sh            # as root, or as a user for whom sipp and baresip are already installed
#
# 1. Installs SIPp (Debian sip-tester) and baresip (Debian baresip-core) if missing (apt-get, non-interactive).
# 2. Builds the workspace binaries (the e2e tests start target/debug/parkd).
# 3. Runs `cargo test --workspace`: unit tests, then the e2e tests in sip-tests/ (each test starts its own
#    parkd on its own ports; logs land in target/e2e-logs/).
# Exits non-zero on any failure.
set -euo pipefail

cd "$(dirname "$0")/.."

# Debian packages the e2e tests need: SIPp (sip-tester) and the baresip softphone (baresip-core, used by
# sip-tests/tests/baresip.rs with its aufile, aubridge, sndfile, menu and ctrl_tcp modules).
missing=()
command -v sipp >/dev/null 2>&1 || missing+=(sip-tester)
command -v baresip >/dev/null 2>&1 || missing+=(baresip-core)
if [ "${#missing[@]}" -gt 0 ]; then
    echo "==> installing ${missing[*]}"
    if [ "$(id -u)" -ne 0 ]; then
        echo "error: ${missing[*]} missing and this is not root; run: apt-get install -y ${missing[*]}" >&2
        exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
fi
echo "==> $(sipp -v 2>/dev/null | grep -m1 -o 'SIPp v[^ ]*' || echo 'sipp (version unknown)')"
echo "==> $(baresip -h 2>&1 | grep -m1 -o 'baresip v[^ ]*' || echo 'baresip (version unknown)')"

if ! command -v cargo >/dev/null 2>&1; then
    echo "error: cargo not found: install Rust (https://rustup.rs) first" >&2
    exit 1
fi

echo "==> cargo build --workspace --bins"
cargo build --workspace --bins

echo "==> cargo test --workspace"
cargo test --workspace "$@"
