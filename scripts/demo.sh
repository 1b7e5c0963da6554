#!/usr/bin/env bash
# keyrelay end to end: the mock provider, keyrelay and sample jobs on the local
# RabbitMQ (started or installed when needed).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-rabbitmq.sh
cargo run --quiet --locked -- demo "$@"
