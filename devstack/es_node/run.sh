#!/usr/bin/env bash
# Start the local Elasticsearch node:  run.sh --home DIR [--port 9200]
# Build only (resolve jars into the Maven cache, compile):  run.sh build
set -euo pipefail
HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
TARGET="$HERE/target"

# shellcheck source=../java_node.sh
. "$HERE/../java_node.sh"

# Elasticsearch 9 needs Java 21 or newer.
JAVA_HOME="$(pick_jdk es_node 21 99 "${ES_JAVA_HOME:-}")"
export JAVA_HOME
build_if_changed "$HERE" "$HERE/pom.xml" "$HERE/src"
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
