package dev.hasidecar.flink;

import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.IllegalConfigurationException;

import java.net.URI;
import java.time.Duration;

/** The plugin's own Flink configuration keys, under {@code high-availability.sidecar.*}. */
public final class SidecarOptions {

    /** The sidecar beside this process; its API is loopback-only, so this is normally local. */
    public static final ConfigOption<String> URL =
            ConfigOptions.key("high-availability.sidecar.url")
                    .stringType()
                    .defaultValue("http://127.0.0.1:4040")
                    .withDescription(
                            "The HTTP API of the ha-sidecar beside this JobManager, TaskManager or CLI.");

    /**
     * Bound of one HTTP request, and of the wait for the sidecar at start (a sidecar container
     * may start a moment after Flink's).
     */
    public static final ConfigOption<Duration> REQUEST_TIMEOUT =
            ConfigOptions.key("high-availability.sidecar.request-timeout")
                    .durationType()
                    .defaultValue(Duration.ofSeconds(10))
                    .withDescription(
                            "How long one request to the sidecar may take, and how long a process waits for its sidecar at start.");

    private SidecarOptions() {}

    /** The configured URL, checked: an http URL with a host and no path. */
    static URI url(Configuration conf) {
        String raw = conf.get(URL).trim();
        URI uri;
        try {
            uri = URI.create(raw);
        } catch (IllegalArgumentException e) {
            throw new IllegalConfigurationException(
                    URL.key() + ": " + raw + " is not a URL (" + e.getMessage() + "); use e.g. http://127.0.0.1:4040");
        }
        if (!"http".equals(uri.getScheme()) || uri.getHost() == null) {
            throw new IllegalConfigurationException(
                    URL.key() + ": " + raw + " must be an http:// URL with a host and port, such as http://127.0.0.1:4040 (the sidecar's http.listen)");
        }
        if (uri.getRawPath() != null && !uri.getRawPath().isEmpty() && !uri.getRawPath().equals("/")) {
            throw new IllegalConfigurationException(
                    URL.key() + ": " + raw + " must not have a path: the plugin adds /leader, /state, /candidacy itself");
        }
        return URI.create("http://" + uri.getRawAuthority());
    }

    static Duration requestTimeout(Configuration conf) {
        Duration d = conf.get(REQUEST_TIMEOUT);
        if (d.isNegative() || d.isZero()) {
            throw new IllegalConfigurationException(
                    REQUEST_TIMEOUT.key() + ": " + d + " must be positive, such as 10 s");
        }
        return d;
    }
}
