#!/usr/bin/env bash
# Validate docker/ without a Docker engine:
#   - docker/docker-compose.yml           docker-compose config -q (Debian's docker-compose)
#   - docker/docker-compose.fleet.yml     the same (three keyrelay instances, a 3-node cluster)
#   - docker/prometheus/prometheus.yml    promtool check config (also checks its rule_files)
#   - docker/prometheus/alerts.yml        promtool check rules
#   - docker/prometheus/alerts.test.yml   promtool test rules (unit tests of the alerts)
#   - docker/grafana/**                   JSON/YAML syntax, dashboard structure
#   - metric names                        every keyrelay_* name used by the dashboard and the
#                                         alerts exists in src/core/metrics.rs (except the planned
#                                         queue-depth metrics)
#   - docker/Dockerfile                   instructions known, required ones present, COPY
#                                         sources present in the build context
#   - compose bind mounts                 every ./file mounted by the compose file exists
#   - docker/*.compose.toml               loaded by keyrelay's own config code, with the compose
#                                         file's environment (only if a keyrelay binary exists:
#                                         $KEYRELAY_BIN, target/release or target/debug)
# Missing tools (docker-compose, promtool) are installed with apt-get (as root or via sudo).
# hadolint is not packaged for Debian and is skipped. Exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."

failures=0
pass() { printf 'ok    %s\n' "$1"; }
fail() { printf 'FAIL  %s\n' "$1"; failures=$((failures + 1)); }
skip() { printf 'skip  %s\n' "$1"; }
# run "description" cmd...: run, show output only on failure.
run() {
    local what=$1; shift
    local out
    if out=$("$@" 2>&1); then
        pass "$what"
    else
        fail "$what"
        printf '%s\n' "$out" | sed 's/^/      /'
    fi
}

# --- tools -------------------------------------------------------------------
need_pkgs=()
command -v docker-compose >/dev/null 2>&1 || need_pkgs+=(docker-compose)
command -v promtool >/dev/null 2>&1 || need_pkgs+=(prometheus)
if [ ${#need_pkgs[@]} -gt 0 ]; then
    echo "installing ${need_pkgs[*]} (apt-get)"
    if [ "$(id -u)" -eq 0 ]; then sudo=(); elif command -v sudo >/dev/null 2>&1; then sudo=(sudo); else
        echo "error: need root or sudo to install ${need_pkgs[*]}" >&2; exit 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get update -qq >/dev/null || { echo "error: apt-get update failed" >&2; exit 1; }
    # --no-install-recommends: prometheus recommends a whole exporter set.
    "${sudo[@]}" apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null \
        || { echo "error: apt-get install ${need_pkgs[*]} failed" >&2; exit 1; }
    # The Debian package starts a Prometheus server; the checks need only promtool.
    if [[ " ${need_pkgs[*]} " == *" prometheus "* ]] && command -v systemctl >/dev/null 2>&1; then
        "${sudo[@]}" systemctl disable --now prometheus >/dev/null 2>&1 || true
    fi
fi
echo "tools: $(docker-compose version --short 2>/dev/null || echo '?') (docker-compose)," \
     "$(promtool --version 2>&1 | head -n1)"

# Python with PyYAML: Debian's python3 has it once docker-compose is installed.
PY=python3
for candidate in /usr/bin/python3 python3; do
    if "$candidate" -c 'import yaml' >/dev/null 2>&1; then PY=$candidate; break; fi
done

# --- compose -----------------------------------------------------------------
run "docker-compose config (docker/docker-compose.yml)" \
    docker-compose -f docker/docker-compose.yml config -q
run "docker-compose config (docker/docker-compose.fleet.yml)" \
    docker-compose -f docker/docker-compose.fleet.yml config -q

check_mounts() {
    local missing=0 src
    # Short-syntax bind mounts of files in docker/: "- ./path:/container/path[:ro]".
    while read -r src; do
        if [ ! -e "docker/$src" ]; then echo "missing bind-mount source docker/$src"; missing=1; fi
    done < <(grep -ohE '^\s*-\s*\./[^:]+' docker/docker-compose.yml docker/docker-compose.fleet.yml | sed -E 's/^\s*-\s*//')
    return $missing
}
run "compose bind-mount sources exist" check_mounts

# --- prometheus --------------------------------------------------------------
run "promtool check config docker/prometheus/prometheus.yml" \
    promtool check config docker/prometheus/prometheus.yml
run "promtool check rules docker/prometheus/alerts.yml" \
    promtool check rules docker/prometheus/alerts.yml
run "promtool test rules docker/prometheus/alerts.test.yml" \
    promtool test rules docker/prometheus/alerts.test.yml

check_alert_annotations() {
    "$PY" - docker/prometheus/alerts.yml <<'PYEOF'
import sys, yaml
doc = yaml.safe_load(open(sys.argv[1]))
bad = []
for group in doc["groups"]:
    for rule in group["rules"]:
        if "alert" not in rule:
            continue
        labels, ann = rule.get("labels", {}), rule.get("annotations", {})
        if labels.get("severity") not in ("critical", "warning", "info"):
            bad.append(f"{rule['alert']}: severity label missing or unknown")
        for key in ("summary", "description"):
            if not ann.get(key, "").strip():
                bad.append(f"{rule['alert']}: annotation {key} missing")
if bad:
    print("\n".join(bad)); sys.exit(1)
PYEOF
}
run "every alert has severity, summary, description" check_alert_annotations

# --- grafana -----------------------------------------------------------------
run "python3 -m json.tool docker/grafana/dashboards/keyrelay.json" \
    python3 -m json.tool docker/grafana/dashboards/keyrelay.json
check_grafana() {
    "$PY" - <<'PYEOF'
import json, sys, yaml
bad = []
for f in ("docker/grafana/provisioning/datasources/prometheus.yml",
          "docker/grafana/provisioning/dashboards/keyrelay.yml"):
    doc = yaml.safe_load(open(f))
    if doc.get("apiVersion") != 1:
        bad.append(f"{f}: apiVersion must be 1")
ds = yaml.safe_load(open("docker/grafana/provisioning/datasources/prometheus.yml"))["datasources"]
ds_uids = {d["uid"] for d in ds}
dash = json.load(open("docker/grafana/dashboards/keyrelay.json"))
if not dash.get("uid") or not dash.get("title"):
    bad.append("dashboard: uid and title required")
panels = []
def walk(ps):
    for p in ps:
        panels.append(p)
        walk(p.get("panels", []))
walk(dash.get("panels", []))
ids = [p["id"] for p in panels]
if len(ids) != len(set(ids)):
    bad.append("dashboard: duplicate panel ids")
variables = {v["name"] for v in dash.get("templating", {}).get("list", [])}
for p in panels:
    if p.get("type") in ("row", "text"):
        continue
    if "gridPos" not in p:
        bad.append(f"panel {p.get('title')}: no gridPos")
    if not p.get("targets"):
        bad.append(f"panel {p.get('title')}: no query")
    for t in p.get("targets", []):
        if not t.get("expr"):
            bad.append(f"panel {p.get('title')}: target without expr")
        uid = (t.get("datasource") or p.get("datasource") or {}).get("uid", "")
        if uid.startswith("$"):
            if uid.strip("${}") not in variables:
                bad.append(f"panel {p.get('title')}: datasource variable {uid} undefined")
        elif uid not in ds_uids:
            bad.append(f"panel {p.get('title')}: datasource uid {uid!r} not provisioned")
print(f"{len(panels)} panels")
if bad:
    print("\n".join(bad)); sys.exit(1)
PYEOF
}
run "grafana provisioning and dashboard structure" check_grafana

# --- metric names ------------------------------------------------------------
# Planned metrics not exported yet (none at the moment).
FUTURE_METRICS=""
check_metric_names() {
    local known used missing=0 name
    known=$(grep -rhoE '"keyrelay_[a-z_]+"' src/core/metrics.rs src/core/metrics/ | tr -d '"' | sort -u)
    [ -n "$known" ] || { echo "no metric names found in src/core/metrics.rs or src/core/metrics/"; return 1; }
    used=$(grep -ohE 'keyrelay_[a-z_]+' docker/grafana/dashboards/keyrelay.json \
               docker/prometheus/alerts.yml docker/prometheus/alerts.test.yml \
           | sed -E 's/_(bucket|sum|count)$//' | sort -u)
    for name in $used; do
        if grep -qxF "$name" <<<"$known"; then continue; fi
        if grep -qwF "$name" <<<"$FUTURE_METRICS"; then
            echo "  (planned, not in src/core/metrics.rs yet: $name)"; continue
        fi
        echo "unknown metric: $name"; missing=1
    done
    [ $missing -eq 0 ] && echo "$(wc -w <<<"$used") names used, all known"
    return $missing
}
if out=$(check_metric_names 2>&1); then
    pass "metric names used in dashboard/alerts exist in src/core/metrics.rs"
    printf '%s\n' "$out" | grep -F '(planned' | sed 's/^/    /'
else
    fail "metric names used in dashboard/alerts exist in src/core/metrics.rs"
    printf '%s\n' "$out" | grep -vF '(planned' | sed 's/^/      /'
fi

# --- Dockerfile --------------------------------------------------------------
check_dockerfile() {
    "$PY" - <<'PYEOF'
import os, re, sys
KNOWN = {"FROM", "RUN", "CMD", "LABEL", "EXPOSE", "ENV", "ADD", "COPY", "ENTRYPOINT",
         "VOLUME", "USER", "WORKDIR", "ARG", "ONBUILD", "STOPSIGNAL", "HEALTHCHECK", "SHELL"}
text = open("docker/Dockerfile").read()
# Join continuation lines, drop comments and blanks.
lines, cur = [], ""
for raw in text.splitlines():
    s = raw.strip()
    if s.startswith("#") or (not s and not cur):
        continue
    if s.endswith("\\"):
        cur += s[:-1] + " "
        continue
    cur += s
    if cur.strip():
        lines.append(cur.strip())
    cur = ""
bad = []
instrs = []
for l in lines:
    word = l.split()[0].upper()
    if word not in KNOWN:
        bad.append(f"unknown instruction: {l[:60]}")
    instrs.append((word, l))
words = [w for w, _ in instrs]
def has(pattern):
    return any(re.search(pattern, l) for _, l in instrs)
if words.count("FROM") < 2: bad.append("expected a multi-stage build (2 FROM)")
for need, pattern in [("non-root USER", r"^USER\s+(?!root\b|0\b)\S+"),
                      ("EXPOSE 9464", r"^EXPOSE\s+.*\b9464\b"),
                      ("HEALTHCHECK on /healthz", r"^HEALTHCHECK\s.*CMD\s.*/healthz"),
                      ("VOLUME /data", r"^VOLUME\s.*/data"),
                      ('ENTRYPOINT ["keyrelay"]', r'^ENTRYPOINT\s+\["keyrelay"\]'),
                      ("CMD run --config", r'^CMD\s+\["run",\s*"--config",\s*"/etc/keyrelay/keyrelay.toml"\]'),
                      ("cargo build --release --locked", r"cargo build --release --locked")]:
    if not has(pattern):
        bad.append(f"missing: {need}")
# COPY sources (not --from) must exist in the context and pass docker/Dockerfile.dockerignore.
allow = [l.strip() for l in open("docker/Dockerfile.dockerignore")
         if l.strip() and not l.startswith("#")]
for w, l in instrs:
    if w != "COPY" or "--from=" in l:
        continue
    parts = [p for p in l.split()[1:] if not p.startswith("--")]
    for src in parts[:-1]:
        if not os.path.exists(src):
            bad.append(f"COPY source missing from the build context: {src}")
        allowed = any(src.rstrip('/') == a[1:] or src.startswith(a[1:] + "/")
                      for a in allow if a.startswith("!"))
        if allow[:1] == ["*"] and not allowed:
            bad.append(f"COPY source excluded by Dockerfile.dockerignore: {src}")
print(f"{len(instrs)} instructions, stages: {words.count('FROM')}")
if bad:
    print("\n".join(bad)); sys.exit(1)
PYEOF
}
run "Dockerfile structure (hadolint not available: skipped)" check_dockerfile

# --- keyrelay's own config loader ---------------------------------------------
KEYRELAY_BIN=${KEYRELAY_BIN:-}
if [ -z "$KEYRELAY_BIN" ]; then
    for b in target/release/keyrelay target/debug/keyrelay; do
        if [ -x "$b" ] && [ -x "$b-mock" ]; then KEYRELAY_BIN=$b; break; fi
    done
fi
check_keyrelay_config() {
    # The keyrelay service's environment as compose resolves it.
    local envs=()
    mapfile -t envs < <(docker-compose -f docker/docker-compose.yml config | "$PY" -c '
import sys, yaml
env = yaml.safe_load(sys.stdin)["services"]["keyrelay"]["environment"]
for k, v in (env.items() if isinstance(env, dict) else (e.split("=", 1) for e in env)):
    print(f"{k}={v}")')
    [ ${#envs[@]} -gt 0 ] || { echo "no environment for service keyrelay in the compose file"; return 1; }
    local out
    # An unknown pool is rejected after the config has loaded and validated, before
    # any connection: that message means the config is good.
    out=$(env -i PATH="$PATH" "${envs[@]}" "$KEYRELAY_BIN" enqueue --pool __config_check__ \
            --config docker/keyrelay.compose.toml /dev/null 2>&1)
    if grep -q 'no pool named `__config_check__`' <<<"$out"; then return 0; fi
    printf '%s\n' "$out"; return 1
}
check_mock_config() {
    local log pid i
    log=$(mktemp)
    "$(dirname "$KEYRELAY_BIN")/keyrelay-mock" --listen 127.0.0.1:0 --config docker/mock-provider.compose.toml >"$log" 2>&1 &
    pid=$!
    for i in $(seq 1 50); do
        if grep -q '^listening on' "$log"; then kill -INT "$pid" 2>/dev/null; wait "$pid" 2>/dev/null; rm -f "$log"; return 0; fi
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
    cat "$log"; rm -f "$log"; return 1
}
if [ -n "$KEYRELAY_BIN" ]; then
    run "docker/keyrelay.compose.toml loads with the compose environment ($KEYRELAY_BIN)" check_keyrelay_config
    run "docker/mock-provider.compose.toml starts the mock ($KEYRELAY_BIN)" check_mock_config
else
    skip "compose TOML files against keyrelay's config loader (no keyrelay binary; cargo build first)"
fi

echo
if [ "$failures" -gt 0 ]; then
    echo "check-docker: $failures check(s) failed"
    exit 1
fi
echo "check-docker: all checks passed"
