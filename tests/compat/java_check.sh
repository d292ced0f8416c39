#!/usr/bin/env bash
# Runs the Java-client checks (java/, built by install.sh): java_check.sh --step NAME [--bootstrap H:P,...]
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# a small heap and the quick-starting JIT tier: CI's 2 cores run other builds at the same time
exec java -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Xmx256m -Dorg.slf4j.simpleLogger.defaultLogLevel=warn \
    -cp "$HERE/java/target/classes:$(cat "$HERE/java/target/classpath.txt")" skiff.compat.Check "$@"
