#!/usr/bin/env bash
# A real Airflow on the local stack: `airflow standalone` (api-server with the UI, scheduler, DAG
# processor, triggerer) with a LocalExecutor small enough for 2 cores.
# Usage: devstack/airflow.sh up|down|status [instance]
# Settings of your own (KEY=value lines) go to .local/airflow-home/airflow.env.
# After startup it creates the pool the batches run in (ES_EXPORT_BATCH_POOL, default es_export_batches)
# with ES_EXPORT_BATCH_POOL_SLOTS slots (default 8).
#
# `instance` names a separate Airflow home and port, so the tests run their own Airflow
# (instance "test", port 8180, tiny deadline) without touching the one `make airflow` started.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="$ROOT/.local"
VENV="${VENV:-$ROOT/.venv}"
ENV_FILE="$LOCAL/stack.env"
INSTANCE="${2:-airflow}"
NAME="airflow-$INSTANCE"
[ "$INSTANCE" = airflow ] && NAME=airflow
PIDFILE="$LOCAL/pids/$NAME.pid"
LOG="$LOCAL/logs/$NAME.log"
HOME_DIR="$LOCAL/$NAME-home"

die() { printf 'airflow: %s\n' "$*" >&2; exit 1; }

pid_alive() { [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }

settings() {  # the per-instance knobs; a caller's environment wins
  if [ "$INSTANCE" = test ]; then
    PORT="${AIRFLOW_TEST_PORT:-8180}"
    STATSD_PORT="${AIRFLOW_TEST_STATSD_PORT:-8135}"
    # Every test run misses this deadline on purpose: the test listens for the alert.
    DEADLINE="${ES_EXPORT_DEADLINE_SECONDS_TEST:-5}"
  else
    PORT="${AIRFLOW_PORT:-8080}"
    STATSD_PORT="${AIRFLOW_STATSD_PORT:-8125}"
    DEADLINE="${ES_EXPORT_DEADLINE_SECONDS:-21600}"
  fi
  URL="http://127.0.0.1:$PORT"
}

password_of() {  # generated once per home and user, kept out of git (.local is ignored)
  local f="$HOME_DIR/$1_password"
  if [ ! -s "$f" ]; then
    mkdir -p "$HOME_DIR"
    (umask 077; head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$f")
  fi
  cat "$f"
}

admin_password() { password_of admin; }

healthy() { curl -sf "$URL/api/v2/monitor/health" | grep -q '"scheduler":{"status":"healthy"'; }

api_token() {  # a bearer token of admin for the REST API
  curl -sf -X POST "$URL/auth/token" -H 'Content-Type: application/json' \
    -d "{\"username\": \"admin\", \"password\": \"$(admin_password)\"}" | python3 -c 'import json,sys; print(json.load(sys.stdin)["access_token"])'
}

dags_parsed() {  # both DAGs serialized, so runs and backfills can be created at once
  local token
  token="$(api_token)" || return 1
  for dag in es_message_export es_message_retry; do
    curl -sf "$URL/api/v2/dags/$dag" -H "Authorization: Bearer $token" >/dev/null || return 1
  done
}

instance_setting() {  # $1 as Airflow sees it: the home's airflow.env, else the caller's environment, else $2
  (
    if [ -f "$HOME_DIR/airflow.env" ]; then set -a; . "$HOME_DIR/airflow.env"; set +a; fi
    printf '%s' "${!1:-$2}"
  )
}

ensure_batch_pool() {  # the pool the `process` tasks run in: without it the scheduler never starts a batch
  local name slots token body
  name="$(instance_setting ES_EXPORT_BATCH_POOL es_export_batches)"
  slots="$(instance_setting ES_EXPORT_BATCH_POOL_SLOTS 8)"
  [[ "$slots" =~ ^[1-9][0-9]*$ ]] || die "ES_EXPORT_BATCH_POOL_SLOTS must be a positive integer, got '$slots'"
  token="$(api_token)" || die "could not sign in to $URL to create the pool $name; see $LOG"
  # Create, or set the slots of an existing pool (what `airflow pools set` does), through the REST API.
  body="$(python3 -c 'import json, sys; print(json.dumps({"actions": [{"action": "create", "action_on_existence": "overwrite",
    "entities": [{"name": sys.argv[1], "slots": int(sys.argv[2]), "include_deferred": False,
                  "description": "es-message-export: batches (process tasks) running at once"}]}]}))' "$name" "$slots")"
  curl -sf -X PATCH "$URL/api/v2/pools" -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
    -d "$body" | python3 -c 'import json, sys; errors = json.load(sys.stdin)["create"]["errors"]; sys.exit(str(errors) if errors else 0)' \
    || die "could not create the pool $name ($slots slots) in $URL; see $LOG"
  echo "airflow ($INSTANCE): pool $name with $slots slots caps the batches running at once"
}

cmd_up() {
  [ -f "$ENV_FILE" ] || die "no $ENV_FILE: start the stack first with 'make up'"
  settings
  if pid_alive; then
    echo "airflow ($INSTANCE): already running on $URL (pid $(cat "$PIDFILE"))"
    if healthy; then ensure_batch_pool; fi  # an Airflow started before the pool existed
    return
  fi
  if (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null; then
    die "port $PORT on 127.0.0.1 is taken by another process, so Airflow cannot start; set AIRFLOW_PORT=<free port>"
  fi
  mkdir -p "$HOME_DIR" "$LOCAL/pids" "$LOCAL/logs"
  local password noaccess; password="$(admin_password)"; noaccess="$(password_of noaccess)"
  (umask 077; printf '{"admin": "%s", "noaccess": "%s"}\n' "$password" "$noaccess" > "$HOME_DIR/passwords.json")
  (
    set -a; . "$ENV_FILE"; set +a
    export AIRFLOW_HOME="$HOME_DIR" PATH="$VENV/bin:$PATH"
    export AIRFLOW__CORE__EXECUTOR=LocalExecutor
    # 2 cores: a few task processes at a time, one DAG-file parser.
    export AIRFLOW__CORE__PARALLELISM=4 AIRFLOW__CORE__MAX_ACTIVE_TASKS_PER_DAG=4
    export AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES=1 AIRFLOW__API__WORKERS=1
    export AIRFLOW__API__PORT="$PORT" AIRFLOW__API__HOST=127.0.0.1 AIRFLOW__API__BASE_URL="$URL"
    # noaccess has no role: Airflow lets it sign in but grants it nothing, not even reading a DAG
    # (SimpleAuthManager's roles viewer..admin all read every DAG). The status page must refuse it.
    export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS="admin:admin,noaccess:"
    export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE="$HOME_DIR/passwords.json"
    export AIRFLOW__API_AUTH__JWT_SECRET="$(head -c 24 /dev/urandom | base64)"
    export AIRFLOW__API__SECRET_KEY="$AIRFLOW__API_AUTH__JWT_SECRET"
    export AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=False
    export AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE=False  # runs come from the UI, the API or backfills
    export AIRFLOW__LOGGING__LOGGING_LEVEL=INFO
    # StatsD, as on MWAA (which forwards it to CloudWatch); nothing listens unless you do.
    export AIRFLOW__METRICS__STATSD_ON=True AIRFLOW__METRICS__STATSD_HOST=127.0.0.1
    export AIRFLOW__METRICS__STATSD_PORT="$STATSD_PORT" AIRFLOW__METRICS__STATSD_PREFIX=airflow
    export ES_EXPORT_POKE_SECONDS="${ES_EXPORT_POKE_SECONDS:-5}"
    export ES_EXPORT_DEADLINE_SECONDS="$DEADLINE"
    export ES_EXPORT_ALERT_SNS_TOPIC_ARN="${ES_EXPORT_ALERT_SNS_TOPIC_ARN:-arn:aws:sns:us-east-1:123456789012:es-export-alerts}"
    # Your own settings last (the Variable, other connections...): KEY=value lines.
    if [ -f "$HOME_DIR/airflow.env" ]; then set -a; . "$HOME_DIR/airflow.env"; set +a; fi
    cd "$HOME_DIR"
    exec setsid "$VENV/bin/airflow" standalone >"$LOG" 2>&1
  ) &
  echo $! > "$PIDFILE"
  local deadline=$((SECONDS + 240))
  until healthy && dags_parsed; do
    pid_alive || die "airflow standalone exited; see $LOG"
    [ "$SECONDS" -lt "$deadline" ] || die "Airflow did not become healthy within 240s; see $LOG"
    sleep 2
  done
  ensure_batch_pool
  echo "airflow ($INSTANCE): UI $URL  login admin / password in $HOME_DIR/admin_password  (log $LOG)"
  echo "  a user without any permission: noaccess / password in $HOME_DIR/noaccess_password"
}

cmd_down() {
  settings
  pid_alive || { rm -f "$PIDFILE"; return 0; }
  local pid; pid="$(cat "$PIDFILE")"
  # standalone runs its components as children in its own session: stop the whole group.
  kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
  for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
  kill -KILL -- "-$pid" 2>/dev/null || true
  rm -f "$PIDFILE"
  echo "airflow ($INSTANCE): stopped (pid $pid)"
}

cmd_status() {
  settings
  if pid_alive; then
    if healthy; then state=healthy; else state="running, NOT healthy"; fi
    printf '%-14s %-28s pid %-8s %s\n' "$NAME" "$URL" "$(cat "$PIDFILE")" "$state"
  else
    printf '%-14s %-28s %s\n' "$NAME" "$URL" stopped
  fi
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  *) die "usage: $0 up|down|status [airflow|test]" ;;
esac
