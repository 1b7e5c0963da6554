#!/usr/bin/env bash
# Make sure a RabbitMQ broker answers on the AMQP_URL host (default 127.0.0.1:5672):
# start the local one if it is stopped, install it from the system's packages
# if it is missing. Idempotent; used by the demo and test commands.
set -euo pipefail

url="${AMQP_URL:-amqp://guest:guest@127.0.0.1:5672/%2f}"
hostport="${url#*://}"; hostport="${hostport#*@}"; hostport="${hostport%%/*}"
host="${hostport%%:*}"; port="${hostport##*:}"; [ "$port" = "$host" ] && port=5672

reachable() { (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; }

if reachable; then
  exit 0
fi
case "$host" in
  127.0.0.1|localhost|::1) ;;
  *) echo "RabbitMQ at $host:$port is not reachable (AMQP_URL=$url); start it and retry" >&2; exit 1 ;;
esac

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

if ! command -v rabbitmq-server >/dev/null 2>&1; then
  echo "RabbitMQ is not installed; installing it from the system's packages..." >&2
  as_root apt-get update -qq
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq rabbitmq-server >/dev/null
fi

echo "starting RabbitMQ..." >&2
as_root rabbitmq-server -detached >/dev/null 2>&1 || true
for _ in $(seq 1 120); do
  if reachable; then
    # The port opens before the broker finishes booting; wait for the app too.
    as_root rabbitmqctl await_startup --timeout 60 >/dev/null 2>&1 || true
    echo "RabbitMQ is up on $host:$port" >&2
    exit 0
  fi
  sleep 1
done
echo "RabbitMQ did not come up on $host:$port within 120 s; see /var/log/rabbitmq" >&2
exit 1
