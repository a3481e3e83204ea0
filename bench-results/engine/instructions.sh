#!/usr/bin/env bash
# Instructions the engine executes per park -> retrieve -> hang-up cycle of `cargo bench --bench engine_cycle`,
# counted by callgrind: repeatable to a few in a million on a shared, loaded machine, where times are not.
#
#   cargo bench --bench engine_cycle --no-run
#   bash bench-results/engine/instructions.sh [BENCH_BINARY] [CYCLES]
#
# BENCH_BINARY defaults to the newest target/release/deps/engine_cycle-*; CYCLES to 2000. It runs the bench's
# fixed-count mode (ENGINE_CYCLE_ONLY=CYCLES: one run of that many cycles) under callgrind and prints the
# instructions per cycle of the whole program and of the engine alone: inclusive counts of Core::handle_sip,
# Core::handle_timeout and Core::poll_output (what the bench times), allocator work inside them included.
set -euo pipefail
bin=${1:-$(ls -t target/release/deps/engine_cycle-* | grep -v '\.d$' | head -1)}
n=${2:-2000}
out=$(mktemp /tmp/engine-callgrind.XXXXXX)
trap 'rm -f "$out"' EXIT
ENGINE_CYCLE_ONLY=$n valgrind --tool=callgrind --callgrind-out-file="$out" "$bin" >/dev/null 2>&1
total=$(callgrind_annotate --threshold=100 "$out" 2>/dev/null | awk '/PROGRAM TOTALS/ {gsub(",", "", $1); print $1}')
engine=$(callgrind_annotate --inclusive=yes --threshold=100 "$out" 2>/dev/null \
  | grep -v '=>' | grep -E 'Core>?::(handle_sip|handle_timeout|poll_output) \[' \
  | awk '{gsub(",", "", $1); s += $1} END {print s}')
echo "binary: $bin"
echo "cycles: $n"
echo "instructions per cycle, whole program (bench harness included): $((total / n))"
echo "instructions per cycle, engine (handle_sip + handle_timeout + poll_output, inclusive): $((engine / n))"
