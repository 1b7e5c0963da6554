#!/usr/bin/env bash
# keyrelay end to end: the mock provider, keyrelay and sample jobs on the local
# RabbitMQ (started or installed when needed).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-rabbitmq.sh
# The mock provider is its own binary (never linked into keyrelay): build it first.
cargo build --quiet --locked -p keyrelay-mock
cargo run --quiet --locked -p keyrelay -- demo "$@"
