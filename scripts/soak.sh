#!/usr/bin/env bash
# Soak run: the release binary at steady mixed load for a bounded time — random
# provider faults, a key with a per-minute limit, a key whose quota runs out every
# minute (its jobs reroute), one RabbitMQ restart half-way (rabbitmqctl stop_app /
# start_app: run it alone). RSS, open file descriptors, the store's size and the
# job queue's depth are printed every 10 s; the run fails if a job is lost, or
# descriptors, memory or the queue grow. Not part of scripts/test.sh.
#
#   scripts/soak.sh [--minutes N] [--rate JOBS_PER_S] [--fault-rate F] [--no-cache]
#
# Defaults: 20 minutes, 40 jobs/s, 5 % of provider calls fail (503/500/reset...),
# the response cache on (it keeps every answer for an hour: memory grows with it).
set -euo pipefail
cd "$(dirname "$0")/.."
minutes=20 rate=40 fault_rate=0.05 cache=1
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) minutes="$2"; shift 2 ;;
    --rate) rate="$2"; shift 2 ;;
    --fault-rate) fault_rate="$2"; shift 2 ;;
    --no-cache) cache=0; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) echo "unknown argument: $1" >&2; exit 2 ;;
  esac
done
scripts/ensure-rabbitmq.sh
SOAK_MINUTES="$minutes" SOAK_RATE="$rate" SOAK_FAULT_RATE="$fault_rate" SOAK_CACHE="$cache" \
  cargo test --release --test soak -- --ignored --nocapture
