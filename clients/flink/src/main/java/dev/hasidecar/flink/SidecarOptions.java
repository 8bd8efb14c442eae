package dev.hasidecar.flink;

import org.apache.flink.configuration.ConfigOption;
import org.apache.flink.configuration.ConfigOptions;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.IllegalConfigurationException;

import java.io.IOException;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
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

    /**
     * A file holding the sidecar's bearer token (the same token as the sidecar's {@code
     * http.token-file}): sent on every request, required by the sidecar on writes when it has one.
     * Read once, when the HA services start.
     */
    public static final ConfigOption<String> TOKEN_FILE =
            ConfigOptions.key("high-availability.sidecar.token-file")
                    .stringType()
                    .noDefaultValue()
                    .withDescription(
                            "A file with the bearer token the sidecar's write API requires (its http.token-file); unset: no token is sent.");

    private SidecarOptions() {}

    /**
     * The token in the file {@link #TOKEN_FILE} names, without surrounding whitespace, or null
     * when the key is unset. Errors name the key and the file, never the file's contents.
     */
    static String token(Configuration conf) {
        String raw = conf.get(TOKEN_FILE);
        if (raw == null || raw.trim().isEmpty()) {
            return null;
        }
        Path file = Paths.get(raw.trim());
        String token;
        try {
            token = new String(Files.readAllBytes(file), StandardCharsets.UTF_8).trim();
        } catch (IOException e) {
            throw new IllegalConfigurationException(
                    TOKEN_FILE.key() + ": cannot read " + file + " (" + e + "); name the file that holds the sidecar's bearer token (a copy of its http.token-file)");
        }
        if (token.isEmpty()) {
            throw new IllegalConfigurationException(
                    TOKEN_FILE.key() + ": " + file + " is empty; it must hold the sidecar's bearer token (a copy of its http.token-file)");
        }
        for (int i = 0; i < token.length(); i++) {
            char c = token.charAt(i);
            if (c <= ' ' || c > '~') {
                throw new IllegalConfigurationException(
                        TOKEN_FILE.key() + ": " + file + " holds a character that cannot be sent in an HTTP header; write the token alone on one line");
            }
        }
        return token;
    }

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
