#!/usr/bin/env bash
# Local single-node Elasticsearch built from Maven Central jars (see pom.xml), no Docker or tarball.
#
#   run.sh --home DIR [--port 9200] [--cluster-name NAME] [--node-name NAME]   build if needed, then run (foreground)
#   run.sh build                                                                 only resolve jars and compile (CI warm-up)
#
# JDK: $ES_JAVA_HOME if set (explicit override), else the newest JDK >= 21 among $JAVA_HOME and /usr/lib/jvm/*.
# Stop with SIGTERM/Ctrl-C: a shutdown hook closes the node cleanly.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
min_java=21   # Elasticsearch 9 jars are Java 21 bytecode

# Major version of a java binary ("1.8.0_x" -> 8, "21.0.2" -> 21), or 0 if it does not run.
java_major() {
  local v
  v="$("$1" -version 2>&1 | awk -F'"' '/version/ {print $2; exit}')" || true
  [[ -n "$v" ]] || { echo 0; return; }
  [[ "$v" == 1.* ]] && v="${v#1.}"
  echo "${v%%[.+-]*}"
}

find_java() {
  if [[ -n "${ES_JAVA_HOME:-}" ]]; then
    local m; m="$(java_major "$ES_JAVA_HOME/bin/java")"
    (( m >= min_java )) || { echo "ES_JAVA_HOME=$ES_JAVA_HOME is Java $m; need >= $min_java" >&2; return 1; }
    echo "$ES_JAVA_HOME"; return
  fi
  local best="" best_major=0 java home m
  for java in ${JAVA_HOME:+"$JAVA_HOME/bin/java"} /usr/lib/jvm/*/bin/java; do
    [[ -x "$java" ]] || continue
    m="$(java_major "$java")"
    if (( m >= min_java && m > best_major )); then
      home="$(cd "$(dirname "$java")/.." && pwd)"; best="$home"; best_major="$m"
    fi
  done
  [[ -n "$best" ]] || {
    echo "No JDK >= $min_java found (checked \$ES_JAVA_HOME, \$JAVA_HOME, /usr/lib/jvm/*). Install one, or set ES_JAVA_HOME." >&2
    return 1
  }
  echo "$best"
}

JAVA_HOME="$(find_java)"
export JAVA_HOME
major="$(java_major "$JAVA_HOME/bin/java")"

# Maven 3.8 uses sun.misc.Unsafe via Guava; JDK 24+ warns loudly about it unless told otherwise.
if (( major >= 24 )); then export MAVEN_OPTS="${MAVEN_OPTS:-} --sun-misc-unsafe-memory-access=allow"; fi

build() {
  cd "$here"
  echo "[es-local] building launcher with Java $major ($JAVA_HOME)..." >&2
  # Keep Maven's chatter in a log; show it only if the build fails.
  if ! { mvn -B package -DskipTests && mvn -B dependency:build-classpath -Dmdep.outputFile=target/classpath.txt; } \
       > target/build.log 2>&1; then
    cat target/build.log >&2
    echo "[es-local] build failed (log: $here/target/build.log)" >&2
    return 1
  fi
  touch target/classpath.txt   # the build stamp: the dependency plugin leaves an unchanged file untouched
}

# Rebuild when the outputs are missing, a jar on the recorded classpath is gone (e.g. ~/.m2 was cleaned,
# or the file came from another machine), or the pom/sources changed since the last build.
needs_build() {
  [[ -f "$here/target/classpath.txt" && -f "$here/target/classes/dev/esexport/localnode/Main.class" ]] || return 0
  local jar jars
  IFS=: read -ra jars < "$here/target/classpath.txt"
  for jar in "${jars[@]}"; do [[ -f "$jar" ]] || return 0; done
  [[ -n "$(find "$here/pom.xml" "$here/src" -newer "$here/target/classpath.txt" -print -quit)" ]]
}

if [[ "${1:-}" == "build" ]]; then
  build
  exit 0
fi
if needs_build; then build; fi

jvm_opts=(
  -Xms256m -Xmx512m
  # Lucene (and ES, when its native libs are present) call java.lang.foreign; allow it without warnings.
  --enable-native-access=ALL-UNNAMED
  # Lucene's SIMD vector code, as in Elasticsearch's own jvm.options.
  --add-modules=jdk.incubator.vector
  # Netty settings from Elasticsearch's jvm.options (no Unsafe: avoids JDK 24+ warnings, matches production).
  -Dio.netty.noUnsafe=true -Dio.netty.noKeySetOptimization=true -Dio.netty.recycler.maxCapacityPerThread=0
  -Dlog4j2.disable.jmx=true
  # ES's native helpers (libvec, zstd, ...) ship only in the distribution tarball, not on Maven Central. Without
  # this property ES fails with an NPE while looking for them; pointing at an empty dir makes it fall back
  # cleanly to pure-Java code (mlock, zstd stored-field compression and native vector ops are unavailable).
  -Des.nativelibs.path="$here/target/native"
)

cd "$here"
mkdir -p target/native   # empty on purpose, see es.nativelibs.path above
exec "$JAVA_HOME/bin/java" "${jvm_opts[@]}" -cp "target/classes:$(cat target/classpath.txt)" dev.esexport.localnode.Main "$@"
