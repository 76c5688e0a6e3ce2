# Shared by the node launchers (es_node, es8_node, opensearch_node, opensearch3_node): choose a JDK
# and build the launcher with Maven when its sources changed. Source it; it defines functions only.

java_major() {  # path-to-java -> major version number
  "$1" -version 2>&1 | awk -F'"' '/version/ {split($2, v, "."); print (v[1] == "1" ? v[2] : v[1]); exit}'
}

# pick_jdk LABEL MIN MAX OVERRIDE: the JDK in OVERRIDE (a path) when it has MIN or newer, else the
# newest JDK between MIN and MAX among JAVA_HOME and /usr/lib/jvm/*; never a fixed path.
pick_jdk() {
  local label="$1" min="$2" max="$3" override="$4" best="" best_major=0 candidate major
  for candidate in "$override" "${JAVA_HOME:-}" /usr/lib/jvm/*; do
    [ -n "$candidate" ] && [ -x "$candidate/bin/java" ] && [ -x "$candidate/bin/javac" ] || continue
    major="$(java_major "$candidate/bin/java")"
    [ "${major:-0}" -ge "$min" ] || continue
    if [ -n "$override" ] && [ "$candidate" = "$override" ]; then echo "$candidate"; return; fi
    if [ "$major" -le "$max" ] && [ "$major" -gt "$best_major" ]; then best="$candidate"; best_major="$major"; fi
  done
  if [ -z "$best" ]; then
    echo "$label: no JDK $min to $max found (looked at its override, JAVA_HOME, /usr/lib/jvm/*); install one" >&2
    exit 1
  fi
  echo "$best"
}

# build_if_changed DIR SOURCE...: `mvn package` in DIR unless target/classpath.txt is newer than every SOURCE.
build_if_changed() {
  local dir="$1"; shift
  if [ ! -f "$dir/target/classpath.txt" ] || [ -n "$(find "$@" -newer "$dir/target/classpath.txt" -print -quit)" ]; then
    (cd "$dir" && mvn -q -B -Dstyle.color=never package -DskipTests)
  fi
}
