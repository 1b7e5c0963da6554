#!/usr/bin/env bash
# The shipped binary: a release build of keyrelay, under 30 MB (stripped of
# debug info, symbols kept for backtraces), whose --version names the version
# and the git revision it was built from.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p keyrelay --bin keyrelay
bin=target/release/keyrelay
size=$(stat -c %s "$bin")
limit=$((30 * 1000 * 1000))
echo "check-release: $bin is $size bytes (limit $limit)"
if [ "$size" -ge "$limit" ]; then
  echo "check-release: the release binary is over 30 MB" >&2
  exit 1
fi
version=$("$bin" --version)
echo "check-release: $version"
rev=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
case "$version" in
  "keyrelay "*" ($rev)") ;;
  *) echo "check-release: --version does not name revision $rev" >&2; exit 1 ;;
esac
echo "check-release: ok"
