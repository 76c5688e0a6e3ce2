#!/usr/bin/env bash
# Start a local single-node OpenSearch 3.x in the foreground:  run.sh PORT DATA_DIR
# (same launcher source as ../opensearch_node, built against OpenSearch 3.x jars)
# Build only (resolve jars into the Maven cache, compile):    run.sh build
# Heap: OS_HEAP (default 512m). Log level: OS_LOG_LEVEL (default WARN).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TARGET="$HERE/target"

# shellcheck source=../java_node.sh
. "$HERE/../java_node.sh"

# OpenSearch 3.x is compiled for Java 21 (class files of version 65): it cannot load on Java 17.
JAVA_HOME="$(pick_jdk opensearch3_node 21 99 "${OS3_JAVA_HOME:-}")"
export JAVA_HOME
build_if_changed "$HERE" "$HERE/pom.xml" "$HERE/../opensearch_node/src"
[ "${1:-}" = "build" ] && exit 0
if [ $# -ne 2 ]; then echo "usage: $0 PORT DATA_DIR | build" >&2; exit 2; fi

exec "$JAVA_HOME/bin/java" \
  -Xms${OS3_HEAP:-${OS_HEAP:-512m}} -Xmx${OS3_HEAP:-${OS_HEAP:-512m}} \
  -XX:+UseG1GC -Djava.awt.headless=true -Dfile.encoding=UTF-8 -Dlog4j2.disable.jmx=true \
  -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true -Dio.netty.recycler.maxCapacityPerThread=0 \
  -Dos.logger.level="${OS_LOG_LEVEL:-WARN}" \
  --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED \
  -cp "$TARGET/classes:$(cat "$TARGET/classpath.txt")" \
  dev.esexport.LocalOpenSearch "$@"
