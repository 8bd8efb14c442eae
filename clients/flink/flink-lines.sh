# Sourced by build.sh and test.sh: the Flink release lines the plugin has a jar for, and where
# each one's distribution is. Only the line's own variable is trusted, and only when it holds
# that line's flink-dist jar (a FLINK_HOME of another release is an error, not a silent mix).
FLINK_LINES=(2.3 1.20)

# Prints the FLINK_HOME of release line $1 (2.3: $FLINK_HOME; 1.20: $FLINK_1_20_HOME), installing
# it with scripts/setup.sh (ensure_flink, ensure_flink_1_20) when the variable is unset.
flink_home_for() {
    local line="$1" var ensure home
    case "$line" in
        2.3) var=FLINK_HOME ensure=ensure_flink ;;
        1.20) var=FLINK_1_20_HOME ensure=ensure_flink_1_20 ;;
        *)
            echo "error: no jar of the plugin for Flink $line: the release lines are ${FLINK_LINES[*]}" >&2
            return 1
            ;;
    esac
    home="${!var:-}"
    if [ -z "$home" ]; then
        # setup.sh cds to the repository root and prints its progress; keep stdout for the path.
        home="$(source "$(dirname "${BASH_SOURCE[0]}")/../../scripts/setup.sh" >&2 && "$ensure" >&2 && echo "${!var}")"
    fi
    if ! compgen -G "$home/lib/flink-dist-$line.*.jar" >/dev/null; then
        echo "error: $var=$home holds no lib/flink-dist-$line.*.jar: point $var at a Flink $line distribution, or unset it to install one (scripts/setup.sh $ensure)" >&2
        return 1
    fi
    echo "$home"
}
