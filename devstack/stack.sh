#!/usr/bin/env bash
# The local stack: Elasticsearch, MariaDB and an S3/SQS API server (moto), all on 127.0.0.1,
# started without Docker or systemd. Usage: devstack/stack.sh up|down|status
#
# Every process we start has its PID in .local/pids/<name>.pid, so `down` stops exactly those.
# The settings for everything else (tests, demo, Airflow) go to .local/stack.env.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
LOCAL="$ROOT/.local"
PIDS="$LOCAL/pids"
LOGS="$LOCAL/logs"
VENV="${VENV:-$ROOT/.venv}"
ENV_FILE="$LOCAL/stack.env"

ES_PORT="${ES_PORT:-9200}"
MYSQL_PORT="${MYSQL_PORT:-3306}"
MOTO_PORT="${MOTO_PORT:-5000}"
LAMBDA_PORT="${LAMBDA_PORT:-9001}"
LAMBDA_FUNCTION="es-message-export-processor"
SQS_QUEUE="es-export-batches"
MYSQL_DB="${MYSQL_DB:-tracking}"
MYSQL_USER="${MYSQL_USER:-tracking}"
MYSQL_SOCKET="$LOCAL/mariadb/mysqld.sock"

mkdir -p "$PIDS" "$LOGS"

say() { printf '%s\n' "$*"; }
die() { printf 'stack: %s\n' "$*" >&2; exit 1; }

pid_alive() {  # name -> true when the PID we recorded still runs
  local f="$PIDS/$1.pid"
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

port_in_use() {
  (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

require_free_port() {  # port name
  if port_in_use "$1"; then
    die "port $1 on 127.0.0.1 is already taken by another process, so $2 cannot start. Stop that process or set ${3}=<free port>."
  fi
}

wait_until() {  # seconds description command...
  local secs="$1" what="$2"; shift 2
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [ "$SECONDS" -ge "$deadline" ]; then
      die "$what did not become healthy within ${secs}s; see $LOGS"
    fi
    sleep 1
  done
}

# A password generated once per machine, kept out of git (.local is ignored).
mysql_password() {
  local f="$LOCAL/mysql_password"
  if [ ! -s "$f" ]; then
    (umask 077; head -c 18 /dev/urandom | base64 | tr -dc 'A-Za-z0-9' > "$f")
  fi
  cat "$f"
}

# ---------------------------------------------------------------- Elasticsearch
es_healthy() { curl -sf "$ES_URL/_cluster/health?wait_for_status=yellow&timeout=1s" >/dev/null; }

es_up() {
  if [ -n "${ES_URL_EXTERNAL:-}" ]; then
    ES_URL="$ES_URL_EXTERNAL"
    es_healthy || die "ES_URL=$ES_URL is set but that cluster does not answer"
    say "elasticsearch: using external cluster $ES_URL (nothing started)"
    return
  fi
  # SEARCH_ENGINE=es8|opensearch2|opensearch3 runs the stack on another engine (make demo works on
  # each; make test expects the default, es9, and runs the others in its compatibility suite).
  if [ "${SEARCH_ENGINE:-es9}" != es9 ]; then
    ES_URL="$(bash "$ROOT/devstack/engines.sh" up "$SEARCH_ENGINE")" \
      || die "starting $SEARCH_ENGINE failed; see $LOGS/$SEARCH_ENGINE.log"
    say "search engine: $SEARCH_ENGINE on $ES_URL (devstack/engines.sh)"
    return
  fi
  ES_URL="http://127.0.0.1:$ES_PORT"
  if pid_alive elasticsearch; then say "elasticsearch: already running (pid $(cat "$PIDS/elasticsearch.pid"))"; return; fi
  require_free_port "$ES_PORT" "Elasticsearch" ES_PORT
  bash "$ROOT/devstack/es_node/run.sh" build >"$LOGS/elasticsearch-build.log" 2>&1 \
    || die "building the Elasticsearch launcher failed; see $LOGS/elasticsearch-build.log"
  nohup bash "$ROOT/devstack/es_node/run.sh" --port "$ES_PORT" --home "$LOCAL/elasticsearch" \
    >"$LOGS/elasticsearch.log" 2>&1 &
  echo $! >"$PIDS/elasticsearch.pid"
  wait_until 180 "Elasticsearch on port $ES_PORT" es_healthy
  say "elasticsearch: started on $ES_URL"
}

# ---------------------------------------------------------------- MariaDB
mysql_root() { mariadb --socket="$MYSQL_SOCKET" -uroot "$@"; }

mysql_up() {
  if pid_alive mariadb && [ "$(mysql_root -N -e "SELECT @@have_ssl" 2>/dev/null)" != "YES" ]; then
    say "mariadb: running without TLS (started by an older stack.sh); restarting it with TLS"
    stop_one mariadb
  fi
  if pid_alive mariadb; then
    say "mariadb: already running (pid $(cat "$PIDS/mariadb.pid"))"
    mysql_users
    return
  fi
  require_free_port "$MYSQL_PORT" "MariaDB" MYSQL_PORT
  local datadir="$LOCAL/mariadb/data"
  if [ ! -d "$datadir/mysql" ]; then
    mkdir -p "$datadir"
    mariadb-install-db --user=root --datadir="$datadir" --auth-root-authentication-method=socket \
      >"$LOGS/mariadb-install.log" 2>&1 || die "mariadb-install-db failed; see $LOGS/mariadb-install.log"
  fi
  mysql_tls_files
  nohup mariadbd --no-defaults --user=root --datadir="$datadir" --socket="$MYSQL_SOCKET" \
    --pid-file="$LOCAL/mariadb/mariadbd.pid" --bind-address=127.0.0.1 --port="$MYSQL_PORT" \
    --ssl-ca="$MYSQL_TLS/ca.pem" --ssl-cert="$MYSQL_TLS/server.pem" --ssl-key="$MYSQL_TLS/server.key" \
    --innodb-buffer-pool-size=256M --innodb-flush-log-at-trx-commit=2 --max-connections=200 \
    --character-set-server=utf8mb4 --collation-server=utf8mb4_unicode_ci \
    --log-error="$LOGS/mariadb.err" >"$LOGS/mariadb.log" 2>&1 &
  echo $! >"$PIDS/mariadb.pid"
  wait_until 60 "MariaDB on port $MYSQL_PORT" mysql_root -e "SELECT 1"
  mysql_users
  say "mariadb: started on 127.0.0.1:$MYSQL_PORT (database $MYSQL_DB, user $MYSQL_USER)"
}

# TLS as RDS offers it: a private CA and a server certificate for 127.0.0.1 and localhost, made once per
# machine, so tests can connect as a user that REQUIRE SSL (as with require_secure_transport).
MYSQL_TLS="$LOCAL/mariadb/tls"
mysql_tls_files() {
  [ -f "$MYSQL_TLS/server.pem" ] && return
  mkdir -p "$MYSQL_TLS"
  (cd "$MYSQL_TLS" && umask 077 &&
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=es-export local CA" \
      -keyout ca.key -out ca.pem &&
    openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout server.key -out server.csr &&
    printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\n' >server.ext &&
    openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile server.ext -out server.pem) >"$LOGS/mariadb-tls.log" 2>&1 \
    || die "could not make the MariaDB TLS certificates; see $LOGS/mariadb-tls.log"
  chmod 644 "$MYSQL_TLS/ca.pem"
}

mysql_users() {
  local pw; pw="$(mysql_password)"
  # Idempotent: safe on every `up`.
  mysql_root <<SQL
CREATE DATABASE IF NOT EXISTS \`$MYSQL_DB\` CHARACTER SET utf8mb4 COLLATE utf8mb4_unicode_ci;
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'127.0.0.1' IDENTIFIED BY '$pw';
CREATE USER IF NOT EXISTS '$MYSQL_USER'@'localhost' IDENTIFIED BY '$pw';
ALTER USER '$MYSQL_USER'@'127.0.0.1' IDENTIFIED BY '$pw';
ALTER USER '$MYSQL_USER'@'localhost' IDENTIFIED BY '$pw';
GRANT ALL PRIVILEGES ON \`$MYSQL_DB\`.* TO '$MYSQL_USER'@'127.0.0.1';
GRANT ALL PRIVILEGES ON \`$MYSQL_DB\`.* TO '$MYSQL_USER'@'localhost';
GRANT ALL PRIVILEGES ON \`${MYSQL_DB}\\_test%\`.* TO '$MYSQL_USER'@'127.0.0.1';
CREATE USER IF NOT EXISTS '${MYSQL_USER}_tls'@'127.0.0.1' IDENTIFIED BY '$pw' REQUIRE SSL;
ALTER USER '${MYSQL_USER}_tls'@'127.0.0.1' IDENTIFIED BY '$pw' REQUIRE SSL;
GRANT ALL PRIVILEGES ON \`${MYSQL_DB}\\_test%\`.* TO '${MYSQL_USER}_tls'@'127.0.0.1';
CREATE USER IF NOT EXISTS '${MYSQL_USER}_ro'@'127.0.0.1' IDENTIFIED BY '$pw';
ALTER USER '${MYSQL_USER}_ro'@'127.0.0.1' IDENTIFIED BY '$pw';
GRANT SELECT ON \`${MYSQL_DB}\\_test%\`.* TO '${MYSQL_USER}_ro'@'127.0.0.1';
SQL
}

# ---------------------------------------------------------------- moto (S3 + SQS)
moto_healthy() { curl -sf "http://127.0.0.1:$MOTO_PORT/moto-api/" >/dev/null; }

moto_up() {
  if pid_alive moto; then say "moto: already running (pid $(cat "$PIDS/moto.pid"))"; return; fi
  require_free_port "$MOTO_PORT" "the moto S3/SQS server" MOTO_PORT
  nohup "$VENV/bin/moto_server" -H 127.0.0.1 -p "$MOTO_PORT" >"$LOGS/moto.log" 2>&1 &
  echo $! >"$PIDS/moto.pid"
  wait_until 60 "moto on port $MOTO_PORT" moto_healthy
  say "moto: started on http://127.0.0.1:$MOTO_PORT (S3 and SQS)"
}

# ---------------------------------------------------------------- Lambda + SQS stand-ins
lambda_healthy() { curl -sf "http://127.0.0.1:$LAMBDA_PORT/" >/dev/null; }

# The export bucket, the queue the SQS dispatch mode sends to (dead-letter queue after 3 receives) and
# the SNS topic of the alerts (devstack/aws_resources.py, which docker-compose.yaml runs too). Idempotent.
sqs_queues() {
  AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
  AWS_DEFAULT_REGION=us-east-1 "$VENV/bin/python" "$ROOT/devstack/aws_resources.py" --queue "$SQS_QUEUE" >/dev/null
}

lambda_up() {
  sqs_queues || die "could not create the SQS queues on moto"
  if pid_alive lambda; then say "lambda: already running (pid $(cat "$PIDS/lambda.pid"))"; return; fi
  require_free_port "$LAMBDA_PORT" "the local Lambda endpoint" LAMBDA_PORT
  # The stand-in runs the real handler with the settings a deployed Lambda gets from its environment.
  ES_URL="$ES_URL" MYSQL_HOST=127.0.0.1 MYSQL_PORT="$MYSQL_PORT" MYSQL_USER="$MYSQL_USER" MYSQL_DB="$MYSQL_DB" \
  MYSQL_PASSWORD="$(mysql_password)" AWS_ENDPOINT_URL="http://127.0.0.1:$MOTO_PORT" AWS_ACCESS_KEY_ID=testing \
  AWS_SECRET_ACCESS_KEY=testing AWS_DEFAULT_REGION=us-east-1 PYTHONPATH="$ROOT/include" \
    nohup "$VENV/bin/python" "$ROOT/devstack/lambda_local.py" --port "$LAMBDA_PORT" --function "$LAMBDA_FUNCTION" \
    --queue "$SQS_QUEUE" >"$LOGS/lambda.log" 2>&1 &
  echo $! >"$PIDS/lambda.pid"
  wait_until 30 "the local Lambda on port $LAMBDA_PORT" lambda_healthy
  say "lambda: started on http://127.0.0.1:$LAMBDA_PORT (function $LAMBDA_FUNCTION, polling SQS queue $SQS_QUEUE)"
}

# ---------------------------------------------------------------- settings file
write_env() {
  local pw; pw="$(mysql_password)"
  local moto="http://127.0.0.1:$MOTO_PORT"
  local es_host es_port
  es_host="$(python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(p.hostname)' "$ES_URL")"
  es_port="$(python3 -c 'import sys,urllib.parse as u; p=u.urlparse(sys.argv[1]); print(p.port or 9200)' "$ES_URL")"
  (umask 077; cat >"$ENV_FILE" <<EOF
# Written by devstack/stack.sh up. Source it: set -a; . .local/stack.env; set +a
ES_URL=$ES_URL
ES_PORT=$ES_PORT
MOTO_PORT=$MOTO_PORT
MYSQL_HOST=127.0.0.1
MYSQL_PORT=$MYSQL_PORT
MYSQL_DB=$MYSQL_DB
MYSQL_USER=$MYSQL_USER
MYSQL_PASSWORD=$pw
STACK_MYSQL_TLS_CA=$MYSQL_TLS/ca.pem
STACK_MYSQL_TLS_USER=${MYSQL_USER}_tls
STACK_MYSQL_RO_USER=${MYSQL_USER}_ro
AWS_ENDPOINT_URL=$moto
AWS_ACCESS_KEY_ID=testing
AWS_SECRET_ACCESS_KEY=testing
AWS_DEFAULT_REGION=us-east-1
AIRFLOW_HOME=$LOCAL/airflow
AIRFLOW__CORE__DAGS_FOLDER=$ROOT/dags
AIRFLOW__CORE__PLUGINS_FOLDER=$ROOT/plugins
AIRFLOW__CORE__LOAD_EXAMPLES=False
AIRFLOW__CORE__UNIT_TEST_MODE=False
AIRFLOW__LOGGING__LOGGING_LEVEL=WARNING
PYTHONPATH=$ROOT/include:$ROOT/devstack
AIRFLOW_CONN_ELASTICSEARCH_DEFAULT='{"conn_type": "elasticsearch", "host": "$es_host", "port": $es_port, "schema": "http"}'
AIRFLOW_CONN_MYSQL_TRACKING='{"conn_type": "mysql", "host": "127.0.0.1", "port": $MYSQL_PORT, "login": "$MYSQL_USER", "password": "$pw", "schema": "$MYSQL_DB"}'
AIRFLOW_CONN_AWS_DEFAULT='{"conn_type": "aws", "login": "testing", "password": "testing", "extra": {"region_name": "us-east-1", "endpoint_url": "$moto", "service_config": {"lambda": {"endpoint_url": "http://127.0.0.1:$LAMBDA_PORT"}}}}'
LAMBDA_PORT=$LAMBDA_PORT
EOF
  )
}

# ---------------------------------------------------------------- commands
stop_one() {  # name
  local f="$PIDS/$1.pid"
  [ -f "$f" ] || return 0
  local pid; pid="$(cat "$f")"
  if kill -0 "$pid" 2>/dev/null; then
    # run.sh execs java, so this PID is the JVM itself; children (if any) share its group.
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 30); do kill -0 "$pid" 2>/dev/null || break; sleep 1; done
    if kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
    say "$1: stopped (pid $pid)"
  fi
  rm -f "$f"
}

cmd_up() {
  # A user-provided ES_URL means "use that cluster": we start no node then.
  ES_URL_EXTERNAL="${ES_URL:-}"
  mysql_up
  moto_up
  es_up
  lambda_up
  write_env
  say "settings written to $ENV_FILE"
}

cmd_down() {
  stop_one lambda
  stop_one elasticsearch
  stop_one moto
  stop_one mariadb
}

status_line() {  # name address healthcheck...
  local name="$1" addr="$2"; shift 2
  if pid_alive "$name"; then
    if "$@" >/dev/null 2>&1; then state="healthy"; else state="running, NOT healthy"; fi
    printf '%-14s %-28s pid %-8s %s\n' "$name" "$addr" "$(cat "$PIDS/$name.pid")" "$state"
  else
    printf '%-14s %-28s %s\n' "$name" "$addr" "stopped"
  fi
}

cmd_status() {
  ES_URL="http://127.0.0.1:$ES_PORT"
  status_line elasticsearch "$ES_URL" es_healthy
  status_line mariadb "127.0.0.1:$MYSQL_PORT" mysql_root -e "SELECT 1"
  status_line moto "http://127.0.0.1:$MOTO_PORT" moto_healthy
  status_line lambda "http://127.0.0.1:$LAMBDA_PORT" lambda_healthy
  if [ -f "$ENV_FILE" ]; then say "settings: $ENV_FILE"; fi
}

# One service at a time, for fault tests: stack.sh stop|start elasticsearch|mariadb|moto
cmd_one() {
  local action="$1" name="${2:-}"
  case "$action:$name" in
    stop:elasticsearch|stop:mariadb|stop:moto|stop:lambda) stop_one "$name" ;;
    start:lambda) ES_URL="${ES_URL:-http://127.0.0.1:$ES_PORT}"; lambda_up ;;
    start:elasticsearch) ES_URL_EXTERNAL=""; es_up ;;
    start:mariadb) mysql_up ;;
    start:moto) moto_up ;;
    *) die "usage: $0 stop|start elasticsearch|mariadb|moto" ;;
  esac
}

case "${1:-}" in
  up) cmd_up ;;
  down) cmd_down ;;
  status) cmd_status ;;
  stop|start) cmd_one "$@" ;;
  *) die "usage: $0 up|down|status|stop NAME|start NAME" ;;
esac
