#!/usr/bin/env bash
# Extra search engines for testing the exporter against the sources users really run, each a real
# single node on 127.0.0.1 started from Maven Central jars (no Docker):
#
#   devstack/engines.sh up     ENGINE   build if needed, start in the background, wait for GET / (then
#                                       for yellow health), print the URL on stdout
#   devstack/engines.sh down   ENGINE   stop exactly the process `up` started (its PID file)
#   devstack/engines.sh status [ENGINE] state, URL and version of one engine or of all
#   devstack/engines.sh url    ENGINE   print the URL of a running engine (for scripts: URL=$(... url es8))
#
# ENGINE      launcher                     version         Java
#   opensearch2 devstack/opensearch_node/  OpenSearch 2.19.1  17..23
#   opensearch3 devstack/opensearch3_node/ OpenSearch 3.8.0   21+
#   es8         devstack/es8_node/         Elasticsearch 8.19.21  17+
#
# Settings (environment):
#   OPENSEARCH2_PORT, OPENSEARCH3_PORT, ES8_PORT   HTTP port; when unset, the engine's default port
#                      (9210, 9230, 9250) or the next free one after it. A port given here must be free.
#   OPENSEARCH2_DATA, OPENSEARCH3_DATA, ES8_DATA   data directory (default .local/engines/ENGINE); kept
#                      across restarts; delete it for a fresh node.
#   OS_HEAP, OS3_HEAP, ES8_HEAP                    JVM heap (default 512m)
#   ENGINES_START_TIMEOUT                          seconds to wait for GET / (default 180)
#
# Clients (checked 2026-11-29): opensearch-py 3.2.0 works against both OpenSearch nodes (PIT is
# POST /INDEX/_search/point_in_time there). The pinned elasticsearch-py 9.x refuses OpenSearch
# (UnsupportedProductError) and gets 400 media_type_header_exception from Elasticsearch 8.x: it always
# sends "compatible-with=9", and headers= / .options(headers=) cannot override that (each API method's
# own Accept/Content-Type win). Plain HTTP, perform_request() with explicit compatible-with=8 headers,
# or a transport node class that rewrites 9 to 8 on the wire do work against 8.x.
#
# Files: PID in .local/pids/ENGINE.pid, URL in .local/pids/ENGINE.url, server output in
# .local/logs/ENGINE.log, build output in .local/logs/ENGINE-build.log. Never touches the stack's own
# Elasticsearch (9200) or any other service: it only ever signals the PID it recorded, after checking
# that this PID is still our launcher.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="$ROOT/.local"
PIDS="$LOCAL/pids"
LOGS="$LOCAL/logs"
ENGINES="opensearch2 opensearch3 es8"
# Ports in use by the local stack and its tools: never chosen automatically.
AVOID_PORTS=" 3306 5000 8080 8180 9001 9200 9300 "

say() { echo "engines: $*" >&2; }  # messages on stderr: stdout carries only the URL (for URL=$(...))
die() { echo "engines: $*" >&2; exit 1; }

engine_dir() {
  case "$1" in
    opensearch2) echo "$ROOT/devstack/opensearch_node" ;;
    opensearch3) echo "$ROOT/devstack/opensearch3_node" ;;
    es8) echo "$ROOT/devstack/es8_node" ;;
    *) die "unknown engine '$1' (one of: $ENGINES)" ;;
  esac
}
engine_main_class() {  # what the JVM's command line contains: how we recognise our own process
  case "$1" in
    opensearch2 | opensearch3) echo "dev.esexport.LocalOpenSearch" ;;
    es8) echo "dev.esexport.LocalElasticsearch" ;;
  esac
}
engine_default_port() {
  case "$1" in opensearch2) echo 9210 ;; opensearch3) echo 9230 ;; es8) echo 9250 ;; esac
}
engine_var() {  # engine, suffix -> value of e.g. OPENSEARCH2_PORT (empty when unset)
  local name
  name="$(echo "$1" | tr '[:lower:]' '[:upper:]')_$2"
  echo "${!name:-}"
}
engine_data() {
  local d
  d="$(engine_var "$1" DATA)"
  echo "${d:-$LOCAL/engines/$1}"
}
engine_distribution() {  # what GET / must report: "opensearch" or "elasticsearch"
  case "$1" in opensearch*) echo opensearch ;; *) echo elasticsearch ;; esac
}

port_in_use() {  # port -> true when something accepts connections on 127.0.0.1:port
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

choose_port() {  # engine -> a port: the one given, else the default or the next free one after it
  local given port
  given="$(engine_var "$1" PORT)"
  if [ -n "$given" ]; then
    [[ "$given" =~ ^[0-9]+$ ]] || die "$(echo "$1" | tr '[:lower:]' '[:upper:]')_PORT must be a number, not '$given'"
    if port_in_use "$given"; then die "$1: port $given is already in use"; fi
    echo "$given"
    return
  fi
  port="$(engine_default_port "$1")"
  for _ in $(seq 1 50); do
    if [[ "$AVOID_PORTS" != *" $port "* ]] && ! port_in_use "$port"; then echo "$port"; return; fi
    port=$((port + 1))
  done
  die "$1: no free port found from $(engine_default_port "$1")"
}

# The PID we recorded, if that process is still our launcher for this engine (not a reused PID).
our_pid() {
  local f="$PIDS/$1.pid" pid cmdline
  [ -f "$f" ] || return 1
  pid="$(cat "$f")"
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  kill -0 "$pid" 2>/dev/null || return 1
  cmdline="$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null || true)"
  # Before run.sh execs java the process is `bash .../run.sh PORT DIR`; afterwards the JVM.
  case "$cmdline" in
    *"$(engine_main_class "$1")"* | *"$(engine_dir "$1")/run.sh"*) echo "$pid" ;;
    *) return 1 ;;
  esac
}

engine_url() {
  local f="$PIDS/$1.url"
  [ -f "$f" ] && cat "$f"
}

root_info() {  # url -> "distribution version" from GET /, or nothing
  curl -sf --max-time 5 "$1/" 2>/dev/null | python3 -c '
import json, sys
v = json.load(sys.stdin)["version"]
print(v.get("distribution", "elasticsearch"), v["number"])' 2>/dev/null || true
}

up() {
  local engine="$1" dir pid port data url log start deadline info elapsed health
  dir="$(engine_dir "$engine")"
  mkdir -p "$PIDS" "$LOGS"
  if pid="$(our_pid "$engine")"; then
    say "$engine: already running (pid $pid) at $(engine_url "$engine")"
    engine_url "$engine"
    return
  fi
  rm -f "$PIDS/$engine.pid" "$PIDS/$engine.url"

  port="$(choose_port "$engine")"
  say "$engine: building if needed (log: ${LOGS#"$ROOT"/}/$engine-build.log)"
  if ! bash "$dir/run.sh" build >"$LOGS/$engine-build.log" 2>&1; then
    tail -n 30 "$LOGS/$engine-build.log" >&2
    die "$engine: build failed"
  fi

  data="$(engine_data "$engine")"
  mkdir -p "$data"
  url="http://127.0.0.1:$port"
  log="$LOGS/$engine.log"
  start="$(date +%s%N)"
  # run.sh execs java, so $! is the JVM itself; setsid keeps it out of the caller's job control.
  setsid nohup bash "$dir/run.sh" "$port" "$data" >"$log" 2>&1 </dev/null &
  pid=$!
  echo "$pid" >"$PIDS/$engine.pid"
  echo "$url" >"$PIDS/$engine.url"

  deadline=$(($(date +%s) + ${ENGINES_START_TIMEOUT:-180}))
  while :; do
    if ! kill -0 "$pid" 2>/dev/null; then
      tail -n 40 "$log" >&2
      rm -f "$PIDS/$engine.pid" "$PIDS/$engine.url"
      die "$engine: the node exited during startup (log: $log)"
    fi
    info="$(root_info "$url")"
    if [ -n "$info" ]; then
      if [ "${info%% *}" != "$(engine_distribution "$engine")" ]; then
        die "$engine: $url answers as '$info', not $(engine_distribution "$engine"): another server on that port?"
      fi
      break
    fi
    if [ "$(date +%s)" -ge "$deadline" ]; then
      tail -n 40 "$log" >&2
      die "$engine: no answer from $url/ after ${ENGINES_START_TIMEOUT:-180}s (pid $pid still running; stop it with: $0 down $engine)"
    fi
    sleep 0.5
  done
  # GET / answers before the indices of an existing data directory are recovered: wait for yellow
  # too, so that the first search does not meet a red index. A red index that stays red is reported,
  # not fatal: the node itself is up.
  health="$(curl -s --max-time 70 "$url/_cluster/health?wait_for_status=yellow&timeout=60s" \
    | python3 -c 'import json, sys; print(json.load(sys.stdin)["status"])' 2>/dev/null || echo unknown)"
  elapsed="$(( ($(date +%s%N) - start) / 1000000 ))"
  [ "$health" = red ] && say "$engine: WARNING: cluster health is still red after 60s (see $log)"
  say "$engine: $info up at $url (pid $pid, ${elapsed} ms, health $health, data ${data#"$ROOT"/}, log ${log#"$ROOT"/})"
  echo "$url"
}

down() {
  local engine="$1" pid
  engine_dir "$engine" >/dev/null
  if ! pid="$(our_pid "$engine")"; then
    say "$engine: not running"
    rm -f "$PIDS/$engine.pid" "$PIDS/$engine.url"
    return
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 60); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  if kill -0 "$pid" 2>/dev/null; then
    say "$engine: still running 30s after SIGTERM; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDS/$engine.pid" "$PIDS/$engine.url"
  say "$engine: stopped (pid $pid)"
}

status_one() {
  local engine="$1" pid url info
  engine_dir "$engine" >/dev/null
  if pid="$(our_pid "$engine")"; then
    url="$(engine_url "$engine")"
    info="$(root_info "$url")"
    printf '%-12s %-24s pid %-8s %s\n' "$engine" "$url" "$pid" "${info:-starting or not answering}"
  else
    printf '%-12s %-24s %-12s %s\n' "$engine" "-" "" "stopped"
  fi
}

cmd="${1:-}"
engine="${2:-}"
case "$cmd" in
  up) [ -n "$engine" ] || die "usage: $0 up ENGINE ($ENGINES)"; up "$engine" ;;
  down) [ -n "$engine" ] || die "usage: $0 down ENGINE ($ENGINES)"; down "$engine" ;;
  status)
    if [ -n "$engine" ]; then status_one "$engine"; else for e in $ENGINES; do status_one "$e"; done; fi ;;
  url)
    [ -n "$engine" ] || die "usage: $0 url ENGINE"
    our_pid "$engine" >/dev/null || die "$engine: not running"
    engine_url "$engine" ;;
  *) die "usage: $0 up|down|status|url ENGINE   (ENGINE: $ENGINES)" ;;
esac
