package dev.hasidecar.flink;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.ObjectMapper;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.MissingNode;

import java.io.IOException;
import java.io.InputStream;
import java.net.ConnectException;
import java.net.URI;
import java.net.http.HttpClient;
import java.net.http.HttpConnectTimeoutException;
import java.net.http.HttpRequest;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Map;
import java.util.OptionalLong;
import java.util.concurrent.CompletableFuture;

/**
 * The one HTTP client of the plugin: the sidecar's JSON API over the JDK's {@link HttpClient}
 * (HTTP/1.1, no dependency beyond the JDK and Flink's shaded Jackson).
 *
 * <p>Callers that write must tell "the request never left" from "the outcome is unknown":
 * {@link #definitelyNotSent} is the one place that decides it.
 */
final class SidecarClient {

    static final ObjectMapper JSON = new ObjectMapper();

    /** The header that fences a write to a leadership term. */
    static final String TERM_HEADER = "X-HA-Term";

    private final URI base;
    private final Duration timeout;
    private final HttpClient http;
    /** {@code Bearer <token>} ({@code high-availability.sidecar.token-file}), or null for none. */
    private final String authorization;

    SidecarClient(URI base, Duration timeout) {
        this(base, timeout, null);
    }

    /** With {@code token} (null: none) sent on every request; it is never logged nor shown. */
    SidecarClient(URI base, Duration timeout, String token) {
        this.base = base;
        this.timeout = timeout;
        this.authorization = token == null ? null : "Bearer " + token;
        this.http =
                HttpClient.newBuilder()
                        .version(HttpClient.Version.HTTP_1_1)
                        .connectTimeout(timeout)
                        .followRedirects(HttpClient.Redirect.NEVER)
                        .build();
    }

    URI base() {
        return base;
    }

    Duration timeout() {
        return timeout;
    }

    /** "the sidecar at http://… (high-availability.sidecar.url)": for every error message. */
    String describe() {
        return "the ha-sidecar at " + base + " (" + SidecarOptions.URL.key() + ")";
    }

    /** A whole answer. */
    static final class Response {
        final int status;
        final byte[] body;
        private final OptionalLong etag;

        Response(int status, byte[] body, OptionalLong etag) {
            this.status = status;
            this.body = body;
            this.etag = etag;
        }

        JsonNode json() {
            try {
                return JSON.readTree(body);
            } catch (IOException e) {
                return MissingNode.getInstance();
            }
        }

        /** The stable error code of a JSON error answer, or "" for none. */
        String error() {
            return json().path("error").asText("");
        }

        /** What the sidecar said: the message of an error, else the body as text. */
        String message() {
            JsonNode j = json();
            if (j.has("message")) {
                return j.get("error").asText() + ": " + j.get("message").asText();
            }
            return new String(body, StandardCharsets.UTF_8).trim();
        }

        /** The version in the ETag header, if any. */
        OptionalLong etag() {
            return etag;
        }

        @Override
        public String toString() {
            return "HTTP " + status + " " + message();
        }
    }

    HttpRequest.Builder request(String method, String pathAndQuery, byte[] body, Duration timeout) {
        HttpRequest.BodyPublisher publisher =
                body == null
                        ? HttpRequest.BodyPublishers.noBody()
                        : HttpRequest.BodyPublishers.ofByteArray(body);
        HttpRequest.Builder b =
                HttpRequest.newBuilder(base.resolve(pathAndQuery))
                        .timeout(timeout)
                        .method(method, publisher);
        if (authorization != null) {
            b.header("Authorization", authorization);
        }
        return b;
    }

    Response send(String method, String pathAndQuery, Map<String, String> headers, byte[] body)
            throws IOException, InterruptedException {
        return send(method, pathAndQuery, headers, body, timeout);
    }

    Response send(
            String method,
            String pathAndQuery,
            Map<String, String> headers,
            byte[] body,
            Duration timeout)
            throws IOException, InterruptedException {
        HttpRequest.Builder b = request(method, pathAndQuery, body, timeout);
        headers.forEach(b::header);
        return toResponse(http.send(b.build(), HttpResponse.BodyHandlers.ofByteArray()));
    }

    CompletableFuture<Response> sendAsync(String method, String pathAndQuery) {
        return http.sendAsync(
                        request(method, pathAndQuery, null, timeout).build(),
                        HttpResponse.BodyHandlers.ofByteArray())
                .thenApply(SidecarClient::toResponse);
    }

    /** A request whose answer is read as a stream (the candidacy's lines). */
    HttpResponse<InputStream> openStream(String method, String path)
            throws IOException, InterruptedException {
        return http.send(
                request(method, path, new byte[0], timeout).build(),
                HttpResponse.BodyHandlers.ofInputStream());
    }

    private static Response toResponse(HttpResponse<byte[]> r) {
        return new Response(r.statusCode(), r.body(), parseEtag(r.headers().firstValue("ETag").orElse(null)));
    }

    static OptionalLong parseEtag(String raw) {
        if (raw == null) {
            return OptionalLong.empty();
        }
        String v = raw.trim();
        if (v.startsWith("W/")) {
            v = v.substring(2);
        }
        v = v.replace("\"", "");
        try {
            return OptionalLong.of(Long.parseUnsignedLong(v));
        } catch (NumberFormatException e) {
            return OptionalLong.empty();
        }
    }

    /**
     * True when the exception proves the request never reached the sidecar (the connection
     * was refused or could not be opened in time), so a write certainly did not happen.
     * Anything else that fails after {@code send} began may have been applied.
     */
    static boolean definitelyNotSent(Throwable e) {
        for (Throwable t = e; t != null; t = t.getCause()) {
            if (t instanceof ConnectException || t instanceof HttpConnectTimeoutException) {
                return true;
            }
        }
        return false;
    }

    /** The quoted form of a version, as ETag / If-Match carry it. */
    static String quote(long version) {
        return "\"" + Long.toUnsignedString(version) + "\"";
    }
}
