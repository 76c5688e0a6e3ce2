#!/usr/bin/env bash
# Start a local single-node OpenSearch 2.x in the foreground:  run.sh PORT DATA_DIR
# Build only (resolve jars into the Maven cache, compile):    run.sh build
# Heap: OS_HEAP (default 512m). Log level: OS_LOG_LEVEL (default WARN).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TARGET="$HERE/target"

java_major() {  # path-to-java -> major version number
  "$1" -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit}'
}

# OpenSearch 2.19 runs on Java 11 to 23 (its bundled JDK is 21). Prefer OS_JAVA_HOME, then
# JAVA_HOME, then the machine's JDKs, taking the first one in 17..23; never a fixed path.
find_java_home() {
  local candidate major
  for candidate in "${OS_JAVA_HOME:-}" "${JAVA_HOME:-}" /usr/lib/jvm/*; do
    [ -n "$candidate" ] && [ -x "$candidate/bin/java" ] && [ -x "$candidate/bin/javac" ] || continue
    major="$(java_major "$candidate/bin/java")"
    if [ "${major:-0}" -ge 17 ] && [ "${major:-0}" -le 23 ]; then echo "$candidate"; return; fi
  done
  echo "opensearch_node: no JDK 17..23 found (looked at OS_JAVA_HOME, JAVA_HOME, /usr/lib/jvm/*)" >&2
  exit 1
}

JAVA_HOME="$(find_java_home)"
export JAVA_HOME

build() {
  if [ ! -f "$TARGET/classpath.txt" ] || [ -n "$(find "$HERE/pom.xml" "$HERE/src" -newer "$TARGET/classpath.txt" -print -quit)" ]; then
    (cd "$HERE" && mvn -q -B -Dstyle.color=never package -DskipTests)
  fi
}

build
[ "${1:-}" = "build" ] && exit 0
if [ $# -ne 2 ]; then echo "usage: $0 PORT DATA_DIR | build" >&2; exit 2; fi

exec "$JAVA_HOME/bin/java" \
  -Xms${OS_HEAP:-512m} -Xmx${OS_HEAP:-512m} \
  -XX:+UseG1GC -Djava.awt.headless=true -Dfile.encoding=UTF-8 -Dlog4j2.disable.jmx=true \
  -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true -Dio.netty.recycler.maxCapacityPerThread=0 \
  -Dos.logger.level="${OS_LOG_LEVEL:-WARN}" \
  -cp "$TARGET/classes:$(cat "$TARGET/classpath.txt")" \
  dev.esexport.LocalOpenSearch "$@"
