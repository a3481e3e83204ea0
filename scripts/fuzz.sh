#!/usr/bin/env bash
# Fuzz one target of parkd for N minutes:   bash scripts/fuzz.sh TARGET MINUTES
#   TARGET: datagram | stream | sdp | core   (see fuzz/README.md)
# Needs the nightly toolchain (rustup toolchain install nightly); installs cargo-fuzz when missing. The corpus
# grows in fuzz/corpus/TARGET (seeded from fuzz/seeds/TARGET), crashes land in fuzz/artifacts/TARGET, and
# libFuzzer's output is kept in fuzz/logs/TARGET-<time>.log. Memory is capped at 2 GiB (-rss_limit_mb), one
# input may take at most 10 s. Replay an input: cd fuzz && cargo +nightly run --example replay -- TARGET FILE
set -euo pipefail
target=${1:?usage: scripts/fuzz.sh datagram|stream|sdp|core MINUTES}
minutes=${2:?usage: scripts/fuzz.sh TARGET MINUTES}
case "$target" in
  datagram|stream) max_len=8192 ;;
  sdp) max_len=4096 ;;
  core) max_len=16384 ;;
  *) echo "unknown target $target (datagram | stream | sdp | core)" >&2; exit 2 ;;
esac
cd "$(dirname "$0")/../fuzz"
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "the nightly toolchain is needed: rustup toolchain install nightly" >&2
  exit 2
fi
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz
mkdir -p "corpus/$target" "artifacts/$target" logs
dict=()
[ "$target" != sdp ] && dict=(-dict=sip.dict)
log="logs/$target-$(date +%Y%m%d-%H%M%S).log"
echo "fuzzing $target for $minutes min; log: fuzz/$log"
cargo +nightly fuzz run "$target" "corpus/$target" "seeds/$target" -- \
  -max_total_time=$((minutes * 60)) -rss_limit_mb=2048 -timeout=10 -max_len=$max_len \
  -print_final_stats=1 "${dict[@]}" 2>&1 | tee "$log" | grep --line-buffered -E "^#[0-9]+ +(INITED|DONE|pulse)|^Done|ERROR|SUMMARY|panicked|^stat::"
