#!/usr/bin/env bash
# The whole test suite, from a fresh machine: installs what the tests need (Debian packages, the
# Python, Node, Java and Go client libraries and Kafka's CLI tools), checks formatting and lints,
# runs the Rust tests (unit, property and real-client end-to-end tests), a bounded run of every
# fuzz target and the client-compatibility suite.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n=== %s ===\n' "$*"; }

step "installing test dependencies"
# A C toolchain and zlib for librdkafka, which the rdkafka crate builds from source.
if ! command -v cc >/dev/null || ! command -v make >/dev/null || ! command -v pkg-config >/dev/null \
    || [ ! -e /usr/include/zlib.h ]; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y build-essential pkg-config zlib1g-dev
fi
# Network namespaces, iptables and tc for the multi-host harness (crates/skiff/tests/common/netns.rs).
if ! command -v iptables >/dev/null || ! command -v ip >/dev/null || ! command -v tc >/dev/null; then
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y iproute2 iptables
fi
bash tests/compat/install.sh

step "cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check

step "cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

step "cargo test"
cargo test --workspace --locked

step "fuzzing (every target of fuzz/, 30 s each)"
bash scripts/fuzz.sh 30

step "client-compatibility suite"
cargo build --locked -p skiff
bash tests/compat/run.sh target/debug/skiff
