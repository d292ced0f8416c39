#!/usr/bin/env bash
# Installs the client libraries used by tests/compat/run.sh. Idempotent.
# Uses only apt, pip, npm, Maven Central (through Maven, cached in ~/.m2) and the Go module proxy
# (cached in Go's module cache). Run from anywhere; as root (or with sudo available).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
cd "$HERE"

SUDO=""
if [ "$(id -u)" != "0" ] && command -v sudo >/dev/null 2>&1; then SUDO="sudo"; fi

# --- kcat (Debian: kcat 1.7.1 on librdkafka 2.0.2, the "old client" case) ---
if ! command -v kcat >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y kcat curl
fi
kcat -V 2>&1 | head -2 || true

# --- Python clients in tests/compat/.venv ---
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
    "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --disable-pip-version-check -r requirements.txt
.venv/bin/python -c 'import confluent_kafka, kafka; print("confluent-kafka", confluent_kafka.version(), "librdkafka", confluent_kafka.libversion()); print("kafka-python", kafka.__version__)'

# --- kafkajs ---
if [ -f package-lock.json ]; then
    npm ci --no-audit --no-fund --silent
else
    npm install --no-audit --no-fund --silent
fi
node -e 'console.log("kafkajs", require("kafkajs/package.json").version)'

# --- the Java client and Kafka's CLI tools (java/pom.xml): compiled, classpath in java/target ---
if ! command -v mvn >/dev/null 2>&1 || ! command -v javac >/dev/null 2>&1; then
    $SUDO apt-get update
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y openjdk-17-jdk-headless maven
fi
(cd java && mvn -B -q package)
echo "kafka-clients $(sed -n 's|.*<kafka.version>\(.*\)</kafka.version>.*|\1|p' java/pom.xml) (Java checks and Kafka tools built)"

# --- franz-go and Sarama (go/): Debian's Go is older than go.mod asks for, so Go must be there ---
if ! command -v go >/dev/null 2>&1; then
    echo "go not found: the franz-go and Sarama checks need Go $(sed -n 's/^go //p' go/go.mod) or newer" >&2
    exit 1
fi
(cd go && go mod download && go build -o bin/compat-go .)
(cd go && go list -m github.com/twmb/franz-go github.com/twmb/franz-go/pkg/kadm github.com/IBM/sarama)
