package dev.hasidecar.flink;

/** The Flink release this jar's version-specific wiring is compiled against and tested with. */
final class FlinkVersion {
    /** The release the jar was built against (its jar name carries the release line). */
    static final String BUILT_FOR = "1.20.3";

    /** The jar of this release line: {@code ha-sidecar-flink-<line>.jar}. */
    static final String LINE = "1.20";

    private FlinkVersion() {}
}
