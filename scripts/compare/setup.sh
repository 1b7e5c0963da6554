#!/usr/bin/env bash
# Install the Python comparison workers' packages (LiteLLM, aio-pika, Celery)
# into a virtualenv the bench finds: target/compare-venv (or $KEYRELAY_COMPARE_VENV).
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${KEYRELAY_COMPARE_VENV:-target/compare-venv}"
if ! command -v python3 >/dev/null; then
  echo "error: python3 is needed for the comparison workers" >&2
  exit 1
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check -r scripts/compare/requirements.txt
echo "comparison workers ready: $venv/bin/python"
