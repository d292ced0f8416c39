#!/usr/bin/env bash
# Builds every libFuzzer target in fuzz/ and runs each for a bounded time, starting from the
# committed corpus (fuzz/corpus/<target>); exits non-zero if any target crashed, and prints how
# many inputs each one ran. Usage: scripts/fuzz.sh [seconds-per-target] (default 40).
#
# With a nightly toolchain the targets run under AddressSanitizer; without one (CI may have only
# stable, and no way to download another) they run on stable with no sanitizer: libFuzzer's
# coverage instrumentation needs no unstable flag, and overflow checks and debug assertions are
# on either way. A crash leaves its input in fuzz/artifacts/<target>/ (ignored by git); reproduce
# it with `cargo fuzz run <target> <file>` and keep it as a unit test of the owning crate.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds="${1:-40}"
targets=(kafka_request record_batch gossip_datagram raft_frame http_bodies)
cargo_fuzz_version=0.13.2

if ! cargo fuzz --version 2>/dev/null | grep -qF "$cargo_fuzz_version"; then
    cargo install cargo-fuzz --version "$cargo_fuzz_version" --locked
fi

# SKIFF_FUZZ_TOOLCHAIN=stable takes the stable path even where nightly is installed.
if [ "${SKIFF_FUZZ_TOOLCHAIN:-}" != stable ] && command -v rustup >/dev/null \
    && rustup run nightly rustc --version >/dev/null 2>&1; then
    flags=(+nightly fuzz)
    sanitizer=address
else
    flags=(+stable fuzz)
    sanitizer=none
fi

build_start=$SECONDS
cargo "${flags[@]}" build --sanitizer "$sanitizer" --fuzz-dir fuzz
echo "built the fuzz targets (sanitizer: $sanitizer) in $((SECONDS - build_start)) s"

# New corpus entries go to a scratch copy, so a run leaves the committed corpus as it was.
scratch="$(mktemp -d)"
trap 'rm -rf "$scratch"' EXIT

failed=()
summary=()
for target in "${targets[@]}"; do
    corpus="$scratch/$target"
    mkdir -p "$corpus"
    cp -R "fuzz/corpus/$target/." "$corpus/"
    log="$scratch/$target.log"
    echo "=== fuzzing $target for ${seconds} s"
    status=0
    cargo "${flags[@]}" run --sanitizer "$sanitizer" --fuzz-dir fuzz "$target" "$corpus" -- \
        -max_total_time="$seconds" -timeout=30 -print_final_stats=1 >"$log" 2>&1 || status=$?
    runs="$(grep -o 'stat::number_of_executed_units: [0-9]*' "$log" | grep -o '[0-9]*$' || echo '?')"
    if [ "$status" -ne 0 ]; then
        # From the panic or sanitizer report on: what failed, the input and how to replay it.
        sed -n '/panicked at\|ERROR: \|SUMMARY: /,$p' "$log" | head -n 120
        failed+=("$target")
        summary+=("$target: FAILED after $runs executions (exit $status; input in fuzz/artifacts/$target/)")
    else
        summary+=("$target: $runs executions in ${seconds} s, no crash")
    fi
done

echo
printf '%s\n' "${summary[@]}"
if [ "${#failed[@]}" -ne 0 ]; then
    echo "fuzz targets that crashed: ${failed[*]}" >&2
    exit 1
fi
