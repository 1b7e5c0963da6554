#!/usr/bin/env bash
# A broker memory alarm longer than 30 s with replies in flight (tests/broker_alarm.rs).
# It blocks every publisher on the broker, so it runs alone, not in scripts/test.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/ensure-rabbitmq.sh
exec cargo test --test broker_alarm -- --ignored --nocapture "$@"
