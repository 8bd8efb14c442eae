package dev.hasidecar.flink;

import org.apache.flink.runtime.persistence.ResourceVersion;

/** A key's version in the sidecar's state (its ETag); 0 means the key does not exist. */
public final class SidecarResourceVersion implements ResourceVersion<SidecarResourceVersion> {
    private static final long serialVersionUID = 1L;

    private static final SidecarResourceVersion NOT_EXISTING = new SidecarResourceVersion(0);

    private final long value;

    private SidecarResourceVersion(long value) {
        this.value = value;
    }

    public static SidecarResourceVersion notExisting() {
        return NOT_EXISTING;
    }

    public static SidecarResourceVersion valueOf(long value) {
        return value == 0 ? NOT_EXISTING : new SidecarResourceVersion(value);
    }

    public long getValue() {
        return value;
    }

    @Override
    public boolean isExisting() {
        return value != 0;
    }

    @Override
    public int compareTo(SidecarResourceVersion o) {
        return Long.compareUnsigned(value, o.value);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof SidecarResourceVersion && ((SidecarResourceVersion) o).value == value;
    }

    @Override
    public int hashCode() {
        return Long.hashCode(value);
    }

    @Override
    public String toString() {
        return "SidecarResourceVersion{" + Long.toUnsignedString(value) + "}";
    }
}
