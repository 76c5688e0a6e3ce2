#!/usr/bin/env bash
# Start the local Elasticsearch node:  run.sh --home DIR [--port 9200]
# Build only (resolve jars into the Maven cache, compile):  run.sh build
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TARGET="$HERE/target"

java_major() {  # path-to-java -> major version number
  "$1" -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit}'
}

# Elasticsearch 9 needs Java 21 or newer: take the newest JDK we can find, never a fixed path.
find_java_home() {
  local best="" best_major=0 candidate major
  for candidate in "${ES_JAVA_HOME:-}" "${JAVA_HOME:-}" /usr/lib/jvm/*; do
    [ -n "$candidate" ] && [ -x "$candidate/bin/java" ] && [ -x "$candidate/bin/javac" ] || continue
    major="$(java_major "$candidate/bin/java")"
    if [ "${major:-0}" -gt "$best_major" ]; then best="$candidate"; best_major="$major"; fi
  done
  if [ "$best_major" -lt 21 ]; then
    echo "es_node: no JDK 21 or newer found (looked at ES_JAVA_HOME, JAVA_HOME, /usr/lib/jvm/*); install one" >&2
    exit 1
  fi
  echo "$best"
}

JAVA_HOME="$(find_java_home)"
export JAVA_HOME

build() {
  if [ ! -f "$TARGET/classpath.txt" ] || [ -n "$(find "$HERE/pom.xml" "$HERE/src" -newer "$TARGET/classpath.txt" -print -quit)" ]; then
    (cd "$HERE" && mvn -q -B package -DskipTests)
  fi
}

build
[ "${1:-}" = "build" ] && exit 0

mkdir -p "$TARGET/native"
# - no native libraries (zstd, systemd) ship in the jars: point ES at an empty folder so it falls back
#   to pure Java quietly instead of failing to find the distribution's lib/platform directory;
# - the vector module, native access and the netty settings are those of the distribution's jvm.options.
exec "$JAVA_HOME/bin/java" \
  -Xms${ES_HEAP:-512m} -Xmx${ES_HEAP:-512m} \
  -XX:+UseG1GC -Djava.awt.headless=true -Dfile.encoding=UTF-8 -Dlog4j2.disable.jmx=true \
  -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true -Dio.netty.recycler.maxCapacityPerThread=0 \
  -Des.nativelibs.path="$TARGET/native" \
  --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED \
  -cp "$TARGET/classes:$(cat "$TARGET/classpath.txt")" \
  dev.esexport.LocalElasticsearch "$@"
