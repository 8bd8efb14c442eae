package dev.hasidecar.flink;

import org.apache.flink.runtime.leaderelection.LeadershipLostException;
import org.apache.flink.runtime.persistence.PossibleInconsistentStateException;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.util.FlinkException;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashMap;
import java.util.List;
import java.util.Map;
import java.util.Optional;
import java.util.OptionalLong;

/**
 * The sidecar's fenced, versioned key-value state ({@code /state/{key}}), with every answer
 * sorted into what the caller must do about it:
 *
 * <ul>
 *   <li>{@link Conflict} (412): the precondition did not hold, nothing changed;
 *   <li>{@link LeadershipLostException} (409 {@code not_leader}, or no grant to fence with):
 *       fenced, nothing changed;
 *   <li>{@link PossibleInconsistentStateException}: 503, a timeout or a broken connection after
 *       the request was sent, so the write may or may not have happened;
 *   <li>{@link FlinkException} for the rest (refused as invalid, or the connection could not be
 *       opened): nothing changed.
 * </ul>
 */
final class SidecarState {

    /** A value and its version. */
    static final class Versioned {
        final byte[] value;
        final long version;

        Versioned(byte[] value, long version) {
            this.value = value;
            this.version = version;
        }
    }

    /** The compare-and-set lost: the key is at {@link #current} (empty: absent). */
    static final class Conflict extends FlinkException {
        private static final long serialVersionUID = 1L;
        final OptionalLong current;

        Conflict(String key, OptionalLong current) {
            super(
                    "version conflict on "
                            + key
                            + ": "
                            + (current.isPresent()
                                    ? "it is at version " + Long.toUnsignedString(current.getAsLong())
                                    : "it does not exist"));
            this.current = current;
        }
    }

    /** Precondition of a write: none, "absent" (create only) or "at this version". */
    static final long ANY = -1;
    static final long ABSENT = 0;

    private final SidecarClient client;

    SidecarState(SidecarClient client) {
        this.client = client;
    }

    SidecarClient client() {
        return client;
    }

    Optional<Versioned> get(String key) throws IOException, InterruptedException {
        SidecarClient.Response r = client.send("GET", "/state/" + key, Collections.emptyMap(), null);
        if (r.status == 404) {
            return Optional.empty();
        }
        if (r.status != 200) {
            throw new IOException("reading " + key + " from " + client.describe() + ": " + r);
        }
        OptionalLong v = r.etag();
        if (!v.isPresent()) {
            throw new IOException("reading " + key + " from " + client.describe() + ": no ETag in the answer");
        }
        return Optional.of(new Versioned(r.body, v.getAsLong()));
    }

    /** Every key under the prefix (whole keys). */
    List<String> list(String prefix) throws IOException, InterruptedException {
        SidecarClient.Response r =
                client.send("GET", "/state?prefix=" + prefix, Collections.emptyMap(), null);
        if (r.status != 200) {
            throw new IOException("listing " + prefix + " on " + client.describe() + ": " + r);
        }
        List<String> keys = new ArrayList<>();
        for (JsonNode k : r.json().path("keys")) {
            keys.add(k.asText());
        }
        return keys;
    }

    /**
     * Writes {@code value} at {@code key} fenced by {@code term}; {@code expected} is {@link
     * #ANY}, {@link #ABSENT} or a version. Returns the new version.
     */
    long put(String key, byte[] value, long expected, long term) throws Exception {
        return write("PUT", key, value, expected, term);
    }

    /** Deletes {@code key} (absent is success); {@code term} < 0 sends no fence. */
    void delete(String key, long expected, long term) throws Exception {
        write("DELETE", key, null, expected, term);
    }

    private long write(String method, String key, byte[] value, long expected, long term)
            throws Exception {
        Map<String, String> headers = new HashMap<>();
        if (term >= 0) {
            headers.put(SidecarClient.TERM_HEADER, Long.toUnsignedString(term));
        }
        if (expected == ABSENT) {
            headers.put("If-None-Match", "*");
        } else if (expected > 0) {
            headers.put("If-Match", SidecarClient.quote(expected));
        }
        String what = method + " " + key;
        SidecarClient.Response r;
        try {
            r = client.send(method, "/state/" + key, headers, value);
        } catch (IOException e) {
            if (SidecarClient.definitelyNotSent(e)) {
                throw new FlinkException(
                        what + ": " + client.describe() + " cannot be reached (" + e + "); nothing was written", e);
            }
            throw new PossibleInconsistentStateException(
                    what + ": no answer from " + client.describe() + " (" + e + "); the write may or may not have happened", e);
        }
        switch (r.status) {
            case 200:
                return r.etag().orElse(r.json().path("version").asLong(0));
            case 204:
                return 0;
            case 404:
                if ("DELETE".equals(method) && "not_found".equals(r.error())) {
                    return 0;
                }
                break;
            case 412:
                {
                    JsonNode cur = r.json().path("current_version");
                    throw new Conflict(key, cur.isNumber() ? OptionalLong.of(cur.asLong()) : OptionalLong.empty());
                }
            case 409:
                if ("not_leader".equals(r.error())) {
                    throw new LeadershipLostException(what + " was fenced: " + r.message() + " (nothing was written)");
                }
                break;
            case 503:
                throw new PossibleInconsistentStateException(
                        what + ": " + client.describe() + " answered " + r + "; the write may or may not have happened", null);
            default:
                break;
        }
        throw new FlinkException(what + " refused by " + client.describe() + ": " + r + " (nothing was written)");
    }
}
