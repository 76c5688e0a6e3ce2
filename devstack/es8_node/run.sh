#!/usr/bin/env bash
# Start a local Elasticsearch 8.x node in the foreground:  run.sh --home DIR [--port 9250]
# (also accepted, like opensearch_node/run.sh:  run.sh PORT DATA_DIR)
# Build only (resolve jars into the Maven cache, compile):  run.sh build
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TARGET="$HERE/target"

java_major() {  # path-to-java -> major version number
  "$1" -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit}'
}

# Elasticsearch 8.19 is compiled for Java 17 and supports 17 to 24 (its distribution bundles 24).
# Take ES8_JAVA_HOME if set, else the newest JDK in 17..24 among JAVA_HOME and /usr/lib/jvm/*, else the
# newest JDK 17+ (8.19.21 was seen starting on Java 25 too, with warnings); never a fixed path.
find_java_home() {
  local best="" best_major=0 any="" any_major=0 candidate major
  for candidate in "${ES8_JAVA_HOME:-}" "${JAVA_HOME:-}" /usr/lib/jvm/*; do
    [ -n "$candidate" ] && [ -x "$candidate/bin/java" ] && [ -x "$candidate/bin/javac" ] || continue
    major="$(java_major "$candidate/bin/java")"
    [ "${major:-0}" -ge 17 ] || continue
    if [ -n "${ES8_JAVA_HOME:-}" ] && [ "$candidate" = "$ES8_JAVA_HOME" ]; then echo "$candidate"; return; fi
    if [ "$major" -le 24 ] && [ "$major" -gt "$best_major" ]; then best="$candidate"; best_major="$major"; fi
    if [ "$major" -gt "$any_major" ]; then any="$candidate"; any_major="$major"; fi
  done
  if [ -z "${best:-$any}" ]; then
    echo "es8_node: no JDK 17 or newer found (looked at ES8_JAVA_HOME, JAVA_HOME, /usr/lib/jvm/*); install one" >&2
    exit 1
  fi
  echo "${best:-$any}"
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
# Positional form PORT DATA_DIR, same as opensearch_node/run.sh.
if [ $# -eq 2 ] && [[ "$1" =~ ^[0-9]+$ ]]; then set -- --port "$1" --home "$2"; fi

mkdir -p "$TARGET/native"
# - no native libraries (zstd, systemd) ship in the jars: point ES at an empty folder so it falls back
#   to pure Java quietly instead of failing to find the distribution's lib/platform directory;
# - the vector module, native access and the netty settings are those of the distribution's jvm.options.
exec "$JAVA_HOME/bin/java" \
  -Xms${ES8_HEAP:-512m} -Xmx${ES8_HEAP:-512m} \
  -XX:+UseG1GC -Djava.awt.headless=true -Dfile.encoding=UTF-8 -Dlog4j2.disable.jmx=true \
  -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true -Dio.netty.recycler.maxCapacityPerThread=0 \
  -Des.nativelibs.path="$TARGET/native" \
  --add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED \
  -cp "$TARGET/classes:$(cat "$TARGET/classpath.txt")" \
  dev.esexport.LocalElasticsearch "$@"
