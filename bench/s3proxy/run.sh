#!/usr/bin/env bash
# Start S3Proxy with an in-memory store for `make bench`:  run.sh --port 5100
# Build only (resolve the jars into the Maven cache):  run.sh build
# Path-style requests, AWS v2/v4 signatures with the stack's test credentials (AWS_ACCESS_KEY_ID /
# AWS_SECRET_ACCESS_KEY, "testing" by default). The store lives in the JVM: stopping it empties it.
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TARGET="$HERE/target"

# shellcheck source=../../devstack/java_node.sh
. "$HERE/../../devstack/java_node.sh"

# S3Proxy 2.x needs Java 17 or newer.
JAVA_HOME="$(pick_jdk s3proxy 17 99 "${S3PROXY_JAVA_HOME:-}")"
export JAVA_HOME
build_if_changed "$HERE" "$HERE/pom.xml"
[ "${1:-}" = "build" ] && exit 0

port=5100
while [ $# -gt 0 ]; do
  case "$1" in
    --port) port="$2"; shift 2 ;;
    *) echo "s3proxy: unknown argument $1 (use --port N, or build)" >&2; exit 2 ;;
  esac
done

props="$TARGET/s3proxy-$port.properties"
cat > "$props" <<PROPS
s3proxy.endpoint=http://127.0.0.1:$port
s3proxy.authorization=aws-v2-or-v4
s3proxy.identity=${AWS_ACCESS_KEY_ID:-testing}
s3proxy.credential=${AWS_SECRET_ACCESS_KEY:-testing}
jclouds.provider=transient
jclouds.identity=${AWS_ACCESS_KEY_ID:-testing}
jclouds.credential=${AWS_SECRET_ACCESS_KEY:-testing}
PROPS
exec "$JAVA_HOME/bin/java" -Xms${S3PROXY_HEAP:-1g} -Xmx${S3PROXY_HEAP:-1g} -XX:+UseG1GC -Djava.awt.headless=true \
  -Dlogback.configurationFile="$HERE/logback.xml" -cp "$(cat "$TARGET/classpath.txt")" \
  org.gaul.s3proxy.Main --properties "$props"
