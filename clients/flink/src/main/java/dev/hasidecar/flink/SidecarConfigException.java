package dev.hasidecar.flink;

import org.apache.flink.util.FlinkException;

/**
 * The sidecar answered, but is not set up for what this process needs (an observer where a
 * candidate is needed, an older sidecar without the API): retrying cannot help, the message says
 * what to change.
 */
final class SidecarConfigException extends FlinkException {
    private static final long serialVersionUID = 1L;

    SidecarConfigException(String message) {
        super(message);
    }
}
