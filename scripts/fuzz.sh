#!/usr/bin/env bash
# Fuzz the server's request parsing and validation with cargo-fuzz (libFuzzer; needs nightly):
#   scripts/fuzz.sh [SECONDS] [TARGET...]
# runs every target (or those named) for SECONDS each (default 60). The targets live in
# server/fuzz/ and call janus_server::fuzz, the functions the handlers use. Seeds are read from the
# committed server/fuzz/corpus/<target>/; new inputs go to server/fuzz/target/corpus/<target>/
# (ignored), so the committed corpus stays small. A crash stops the run and is saved under
# server/fuzz/artifacts/<target>/: fix it, then copy the input to
# server/fuzz/regressions/<target>/ where `cargo test -p janus-server --test fuzz_regressions`
# replays it on stable forever.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH="${1:-60}"
shift || true
TOOLCHAIN="${FUZZ_TOOLCHAIN:-nightly}"
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
ALL=$(sed -n 's/^name = "\(.*\)"$/\1/p' server/fuzz/Cargo.toml | grep -v '^janus-server-fuzz$')
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || read -r -a TARGETS <<<"$(echo $ALL)"
cd server/fuzz
# One build for all targets (debug assertions on, address sanitizer).
cargo "+$TOOLCHAIN" fuzz build --release
for t in "${TARGETS[@]}"; do
  work="target/corpus/$t"
  mkdir -p "$work" "corpus/$t" "artifacts/$t"
  echo "== $t: ${SECONDS_EACH}s"
  log="target/fuzz-$t.log"
  rc=0
  cargo "+$TOOLCHAIN" fuzz run --release "$t" "$work" "corpus/$t" -- \
    -max_total_time="$SECONDS_EACH" -max_len=65536 -rss_limit_mb=4096 -timeout=20 -print_final_stats=1 \
    >"$log" 2>&1 || rc=$?
  grep -E "^(#[0-9]+ +DONE|stat::number_of_executed_units|stat::peak_rss_mb|SUMMARY|Test unit written|thread '.*' panicked)" "$log" || true
  if [ "$rc" -ne 0 ]; then
    tail -n 40 "$log"
    echo "fuzz target $t failed (exit $rc); the input is under server/fuzz/artifacts/$t/"
    exit 1
  fi
done
echo "fuzzing done: ${TARGETS[*]} (${SECONDS_EACH}s each), no crash"
