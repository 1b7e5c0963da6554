#!/usr/bin/env bash
# The whole test suite: unit, property and integration tests against a real
# RabbitMQ (started or installed when needed) and the bundled mock provider.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-rabbitmq.sh
scripts/ensure-chromium.sh
cargo test --workspace --all-targets --locked "$@"
# Deployment files: compose, Prometheus config and rules, dashboard (no Docker engine needed).
scripts/check-docker.sh
# The shipped binary: size and --version.
scripts/check-release.sh
