#!/usr/bin/env bash
# Each cargo-fuzz target for a bounded time (FUZZ_SECS seconds, default 60),
# starting from the committed seeds in fuzz/seeds/<target>; new inputs go to a
# temporary corpus. Needs the nightly toolchain (AddressSanitizer by default).
# Run longer by hand:
#   cd fuzz && cargo +nightly fuzz run decode corpus/decode seeds/decode -- -max_total_time=3600
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
secs="${FUZZ_SECS:-60}"
for target in decode http_request config; do
  corpus="$(mktemp -d)"
  echo "--- fuzz $target for ${secs}s"
  log="$corpus.log"
  if ! cargo +nightly fuzz run "$target" "$corpus" "seeds/$target" -- \
    -max_total_time="$secs" -max_len=4096 >"$log" 2>&1; then
    tail -60 "$log" >&2
    echo "fuzz target $target failed (a finding is in fuzz/artifacts/$target/)" >&2
    exit 1
  fi
  grep -E "^Done " "$log"
  rm -rf "$corpus" "$log"
done
