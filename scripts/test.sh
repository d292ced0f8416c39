#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (Debian packages, the
# Python and Node client libraries), checks formatting and lints, runs the Rust tests (unit,
# property and real-client end-to-end tests) and the client-compatibility suite.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s ===\n' "$*"; }

step "installing test dependencies"
bash tests/compat/install.sh

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "client-compatibility suite"
cargo build --locked -p skiff
bash tests/compat/run.sh target/debug/skiff
