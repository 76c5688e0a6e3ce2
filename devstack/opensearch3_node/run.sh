#!/usr/bin/env bash
# Start a local single-node OpenSearch 3.x in the foreground:  run.sh PORT DATA_DIR
# (same launcher source as ../opensearch_node, built against OpenSearch 3.x jars)
# Build only (resolve jars into the Maven cache, compile):    run.sh build
# Heap: OS_HEAP (default 512m). Log level: OS_LOG_LEVEL (default WARN).
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TARGET="$HERE/target"

java_major() {  # path-to-java -> major version number
  "$1" -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit}'
}

# OpenSearch 3.x is compiled for Java 21 (class files of version 65): it cannot load on Java 17.
# Take OS3_JAVA_HOME if set, else the newest JDK 21+ among JAVA_HOME and /usr/lib/jvm/*; never a fixed path.
find_java_home() {
  local best="" best_major=0 candidate major
  for candidate in "${OS3_JAVA_HOME:-}" "${JAVA_HOME:-}" /usr/lib/jvm/*; do
    [ -n "$candidate" ] && [ -x "$candidate/bin/java" ] && [ -x "$candidate/bin/javac" ] || continue
    major="$(java_major "$candidate/bin/java")"
    [ "${major:-0}" -ge 21 ] || continue
    if [ -n "${OS3_JAVA_HOME:-}" ] && [ "$candidate" = "$OS3_JAVA_HOME" ]; then best="$candidate"; break; fi
    if [ "$major" -gt "$best_major" ]; then best="$candidate"; best_major="$major"; fi
  done
  if [ -z "$best" ]; then
    echo "opensearch3_node: no JDK 21 or newer found (looked at OS3_JAVA_HOME, JAVA_HOME, /usr/lib/jvm/*); install one" >&2
    exit 1
  fi
  echo "$best"
}

JAVA_HOME="$(find_java_home)"
export JAVA_HOME

build() {
  if [ ! -f "$TARGET/classpath.txt" ] || [ -n "$(find "$HERE/pom.xml" "$HERE/../opensearch_node/src" -newer "$TARGET/classpath.txt" -print -quit)" ]; then
    (cd "$HERE" && mvn -q -B -Dstyle.color=never package -DskipTests)
  fi
}

build
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
