package dev.hasidecar.flink;

import org.apache.flink.runtime.leaderelection.LeaderElectionDriver;
import org.apache.flink.runtime.leaderelection.LeaderElectionException;
import org.apache.flink.runtime.leaderelection.LeaderInformation;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.node.ObjectNode;
import org.apache.flink.util.FlinkException;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.BufferedReader;
import java.io.IOException;
import java.io.InputStream;
import java.io.InputStreamReader;
import java.net.http.HttpResponse;
import java.nio.charset.StandardCharsets;
import java.util.Collections;
import java.util.HashMap;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.RejectedExecutionException;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.TimeUnit;

/**
 * Flink's election driver over the sidecar's client-owned candidacy.
 *
 * <p>Creating the driver opens {@code POST /candidacy} (Flink creates it when the first
 * contender of a JobManager registers: that is "start campaigning"); {@link #close()} closes it
 * with {@code DELETE /candidacy/{id}}. The answer is a stream of lines, one per change of the
 * sidecar's own leadership and a heartbeat at least every few hundred milliseconds; a daemon
 * thread reads it and hands each line to one event thread, which alone decides grants and
 * revokes, so they strictly alternate:
 *
 * <ul>
 *   <li>grant when a line says {@code leading} under a term this JVM was not granted before, with
 *       that term's {@code session} as Flink's leader session id (a new one per term);
 *   <li>revoke as soon as a line says not leading, the term changes, the stream ends, or the
 *       validity deadline passes with no line extending it (a check every {@link
 *       #CHECK_INTERVAL_MS} ms);
 *   <li>a term revoked locally is never granted again: if the sidecar still leads for it, the
 *       candidacy is reopened, the sidecar resigns that term and a new one (with a new session)
 *       is elected.
 * </ul>
 *
 * <p>{@link #hasLeadership()} is one volatile read of {@link Leadership}: Flink calls it under
 * its lock. Every component this driver publishes is watched (a long poll each), and changes are
 * reported to Flink, which re-publishes when the stored information differs from what it
 * confirmed.
 */
final class SidecarLeaderElectionDriver implements LeaderElectionDriver {

    private static final Logger LOG = LoggerFactory.getLogger(SidecarLeaderElectionDriver.class);

    static final long CHECK_INTERVAL_MS = 50;
    /** No line for this long (heartbeats come every 250 ms at most): the sidecar hangs. */
    static final long STALL_NANOS = TimeUnit.SECONDS.toNanos(2);

    private static final long BACKOFF_MIN_MS = 100;
    private static final long BACKOFF_MAX_MS = 2000;

    private final SidecarClient client;
    private final Listener listener;
    private final Leadership leadership;
    private final ScheduledExecutorService events;
    private final Thread reader;
    private final Object streamLock = new Object();

    private volatile boolean closed;
    /** Another client took the candidacy over: reopening would fight it. */
    private volatile boolean stopped;
    private volatile String candidacy;
    private volatile InputStream stream;
    private volatile long lastLineNanos;
    private volatile int generation;
    /** One long poll per component this driver published, for Flink's self-healing re-publish. */
    private final Map<String, Thread> watches = new ConcurrentHashMap<>();
    /**
     * Delivers component changes to Flink. Not the event thread: Flink re-publishes from inside
     * the callback (a blocking request), which must not hold up grants, revokes and the
     * validity check.
     */
    private final ExecutorService componentEvents =
            Executors.newSingleThreadExecutor(
                    r -> {
                        Thread t = new Thread(r, "ha-sidecar-component-events");
                        t.setDaemon(true);
                        return t;
                    });

    // Confined to the event thread.
    private boolean granted;
    private long grantedTerm = -1;
    private long lastGrantedTerm = -1;
    private ScheduledFuture<?> renewal;

    private SidecarLeaderElectionDriver(
            SidecarClient client, Listener listener, Leadership leadership, InputStream first) {
        this.client = client;
        this.listener = listener;
        this.leadership = leadership;
        this.events =
                Executors.newSingleThreadScheduledExecutor(
                        r -> {
                            Thread t = new Thread(r, "ha-sidecar-election-events");
                            t.setDaemon(true);
                            return t;
                        });
        this.reader = new Thread(() -> readLoop(first), "ha-sidecar-candidacy-reader");
        this.reader.setDaemon(true);
    }

    /**
     * Opens the candidacy (waiting up to the request timeout for a sidecar that is still
     * starting) and starts reading it.
     *
     * @throws SidecarConfigException the sidecar is not a client-candidacy sidecar
     * @throws FlinkException the sidecar cannot be reached
     */
    static SidecarLeaderElectionDriver create(
            SidecarClient client, Listener listener, Leadership leadership) throws Exception {
        long deadline = System.nanoTime() + client.timeout().toNanos();
        InputStream first;
        while (true) {
            try {
                first = open(client);
                break;
            } catch (IOException e) {
                if (System.nanoTime() - deadline >= 0) {
                    throw new FlinkException(
                            "cannot open a candidacy: "
                                    + client.describe()
                                    + " cannot be reached ("
                                    + e
                                    + "); start the sidecar beside this JobManager, or point "
                                    + SidecarOptions.URL.key()
                                    + " at it",
                            e);
                }
                Thread.sleep(200);
            }
        }
        SidecarLeaderElectionDriver d =
                new SidecarLeaderElectionDriver(client, listener, leadership, first);
        d.events.scheduleWithFixedDelay(
                d::check, CHECK_INTERVAL_MS, CHECK_INTERVAL_MS, TimeUnit.MILLISECONDS);
        d.reader.start();
        LOG.info("Opened a candidacy on {}", client.describe());
        return d;
    }

    /** {@code POST /candidacy}: the open stream, or why not. */
    private static InputStream open(SidecarClient client)
            throws IOException, InterruptedException, SidecarConfigException {
        HttpResponse<InputStream> r = client.openStream("POST", "/candidacy");
        if (r.statusCode() == 200) {
            return r.body();
        }
        byte[] body;
        try (InputStream in = r.body()) {
            body = in.readAllBytes();
        }
        SidecarClient.Response resp =
                new SidecarClient.Response(r.statusCode(), body, java.util.OptionalLong.empty());
        String code = resp.error();
        if (resp.status == 409 && (code.equals("observer") || code.equals("candidacy_not_client"))) {
            throw new SidecarConfigException(
                    client.describe()
                            + " cannot hold this JobManager's candidacy ("
                            + resp.message()
                            + "). A JobManager needs its own sidecar with election.candidacy: client"
                            + " in the sidecar's config; TaskManagers and the CLI use observers (election.candidacy: never)");
        }
        if (resp.status == 401) {
            // Retrying cannot help: the token comes from the config.
            throw new SidecarConfigException(
                    client.describe()
                            + " refused the candidacy for want of its bearer token ("
                            + resp.message()
                            + "); set "
                            + SidecarOptions.TOKEN_FILE.key()
                            + " to a file with the token of the sidecar's http.token-file");
        }
        if (resp.status == 404 || resp.status == 405) {
            throw new SidecarConfigException(
                    client.describe()
                            + " does not serve POST /candidacy ("
                            + resp
                            + "): it is older than this plugin; upgrade the sidecar");
        }
        throw new IOException(client.describe() + " refused the candidacy: " + resp);
    }

    // ---- the reader thread ------------------------------------------------------------------

    private void readLoop(InputStream first) {
        InputStream in = first;
        long backoff = BACKOFF_MIN_MS;
        int failures = 0;
        while (!closed && !stopped) {
            if (in != null) {
                int gen;
                synchronized (streamLock) {
                    if (closed) {
                        closeQuietly(in);
                        break;
                    }
                    stream = in;
                    gen = ++generation;
                    lastLineNanos = System.nanoTime();
                }
                String why;
                int lines = 0;
                try {
                    String[] reason = new String[1];
                    lines = read(in, gen, reason);
                    why = reason[0] != null ? "the sidecar closed it: " + reason[0] : "the sidecar ended the stream";
                } catch (IOException | RuntimeException e) {
                    why = "reading it failed: " + e;
                }
                Thread.interrupted();
                closeQuietly(in);
                synchronized (streamLock) {
                    if (stream == in) {
                        stream = null;
                    }
                }
                final String reason = why;
                if (!closed) {
                    post(() -> streamEnded(reason));
                    LOG.info("The candidacy stream from {} ended ({}); reopening", client.describe(), reason);
                }
                if (lines > 0) {
                    backoff = BACKOFF_MIN_MS;
                    failures = 0;
                }
                in = null;
                continue;
            }
            try {
                Thread.sleep(backoff);
            } catch (InterruptedException e) {
                if (closed) {
                    break;
                }
            }
            backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
            if (closed || stopped) {
                break;
            }
            try {
                in = open(client);
            } catch (SidecarConfigException e) {
                post(() -> fail(e));
                break;
            } catch (IOException | InterruptedException e) {
                Thread.interrupted();
                failures++;
                if (failures == 1 || failures % 20 == 0) {
                    LOG.warn("Cannot reopen the candidacy on {} (attempt {}): {}", client.describe(), failures, e.toString());
                }
            }
        }
        closeQuietly(in);
    }

    /** Reads lines until the end of the stream or a closing line; the number of lines read. */
    private int read(InputStream in, int gen, String[] closedReason) throws IOException {
        BufferedReader r = new BufferedReader(new InputStreamReader(in, StandardCharsets.UTF_8));
        int n = 0;
        String text;
        while ((text = r.readLine()) != null) {
            if (text.trim().isEmpty()) {
                continue;
            }
            long received = System.nanoTime();
            lastLineNanos = received;
            JsonNode line = SidecarClient.JSON.readTree(text);
            if (!(line instanceof ObjectNode)) {
                throw new IOException("not a JSON object: " + text);
            }
            n++;
            if (line.hasNonNull("candidacy")) {
                candidacy = line.get("candidacy").asText();
            }
            post(() -> onLine(gen, line, received));
            if (line.has("closed")) {
                closedReason[0] = line.get("closed").asText();
                return n;
            }
        }
        return n;
    }

    /** Ends the current stream from another thread: the reader reopens. */
    private void abortStream() {
        InputStream s;
        synchronized (streamLock) {
            s = stream;
            stream = null;
            generation++;
        }
        if (s != null) {
            closeQuietly(s);
            // A read blocked on a silent connection wakes on interrupt, not always on close.
            reader.interrupt();
        }
    }

    /** Hands a task to the event thread, unless the driver closed meanwhile. */
    private void post(Runnable task) {
        try {
            events.execute(task);
        } catch (RejectedExecutionException e) {
            LOG.debug("Dropped an event after close");
        }
    }

    private static void closeQuietly(InputStream in) {
        if (in == null) {
            return;
        }
        try {
            in.close();
        } catch (IOException | RuntimeException e) {
            LOG.debug("Closing the candidacy stream", e);
        }
    }

    // ---- the event thread -------------------------------------------------------------------

    private void onLine(int gen, JsonNode line, long received) {
        if (closed || gen != generation) {
            return;
        }
        if (line.hasNonNull("candidacy") && line.hasNonNull("ttl_ms")) {
            scheduleRenewal(line.get("candidacy").asText(), line.get("ttl_ms").asLong());
        }
        if (line.has("closed")) {
            String why = line.get("closed").asText();
            revokeIfGranted("the sidecar closed the candidacy (" + why + ")");
            if ("replaced".equals(why)) {
                stopped = true;
                fail(
                        new LeaderElectionException(
                                "another client opened a candidacy on "
                                        + client.describe()
                                        + " and replaced this JobManager's: each JobManager needs a sidecar of its own"));
            }
            return;
        }
        if (!line.path("leading").asBoolean(false)) {
            revokeIfGranted("the sidecar does not lead");
            return;
        }
        long term = line.path("term").asLong(-1);
        UUID session;
        try {
            session = UUID.fromString(line.path("session").asText(""));
        } catch (IllegalArgumentException e) {
            revokeIfGranted("a line without a session id");
            LOG.warn("Ignoring a candidacy line without a valid session id: {}", line);
            return;
        }
        long until = deadline(line, received);
        if (granted && term != grantedTerm) {
            revokeIfGranted("a new term began");
        }
        if (granted) {
            leadership.extend(until);
            return;
        }
        if (term == lastGrantedTerm) {
            // Revoked locally (lapsed, stream lost) while the sidecar kept the term: hand it back
            // so the next grant comes with a new term and session.
            LOG.info("The sidecar still leads for term {}, which this JobManager gave up; reopening the candidacy for a new term", term);
            restartCandidacy();
            return;
        }
        if (System.nanoTime() - until >= 0) {
            return; // stale on arrival; a fresher line follows
        }
        granted = true;
        grantedTerm = term;
        lastGrantedTerm = term;
        Leadership.Grant g = new Leadership.Grant(term, session, until);
        leadership.grant(g);
        LOG.info("Leadership granted by {}: {}", client.describe(), g);
        listener.onGrantLeadership(session);
    }

    /**
     * The instant until which a {@code leading} line holds: the sidecar's deadline on this
     * machine's monotonic clock, and never later than the arrival plus {@code valid_for_ms} (a
     * line that waited in a buffer, or a sidecar on another clock).
     */
    private static long deadline(JsonNode line, long received) {
        JsonNode forMs = line.path("valid_for_ms");
        if (!forMs.isNumber()) {
            return received; // no validity: already expired
        }
        long until = received + TimeUnit.MILLISECONDS.toNanos(forMs.asLong());
        JsonNode mono = line.path("valid_until_monotonic_ns");
        if (mono.isNumber()) {
            long m = mono.asLong();
            if (m - until < 0) {
                until = m;
            }
        }
        return until;
    }

    private void revokeIfGranted(String why) {
        if (!granted) {
            return;
        }
        granted = false;
        grantedTerm = -1;
        leadership.revoke();
        LOG.info("Leadership revoked: {}", why);
        if (!closed) {
            listener.onRevokeLeadership();
        }
    }

    private void check() {
        if (closed) {
            return;
        }
        if (granted && !leadership.isValid()) {
            revokeIfGranted("its validity deadline passed with no extension from the sidecar");
        }
        if (stream != null && System.nanoTime() - lastLineNanos > STALL_NANOS) {
            LOG.warn("No line from {} for {} ms; reconnecting", client.describe(), TimeUnit.NANOSECONDS.toMillis(STALL_NANOS));
            abortStream();
        }
    }

    private void streamEnded(String why) {
        cancelRenewal();
        revokeIfGranted("the candidacy stream ended (" + why + ")");
    }

    private void restartCandidacy() {
        String id = candidacy;
        abortStream();
        if (id != null) {
            client.sendAsync("DELETE", "/candidacy/" + id);
        }
    }

    private void fail(Exception e) {
        revokeIfGranted("error: " + e.getMessage());
        if (!closed) {
            LOG.error("The candidacy failed: {}", e.getMessage());
            listener.onError(e);
        }
    }

    private void scheduleRenewal(String id, long ttlMs) {
        cancelRenewal();
        long every = Math.max(50, ttlMs / 3);
        renewal =
                events.scheduleAtFixedRate(
                        () -> renew(id), every, every, TimeUnit.MILLISECONDS);
    }

    private void cancelRenewal() {
        if (renewal != null) {
            renewal.cancel(false);
            renewal = null;
        }
    }

    private void renew(String id) {
        client.sendAsync("PUT", "/candidacy/" + id)
                .whenComplete(
                        (r, e) -> {
                            if (e != null) {
                                LOG.debug("Renewing candidacy {} failed: {}", id, e.toString());
                            } else if (r.status == 404) {
                                LOG.warn("Candidacy {} is no longer open on {}: {}", id, client.describe(), r.message());
                            } else if (r.status != 204 && r.status != 200) {
                                LOG.warn("Renewing candidacy {} on {}: {}", id, client.describe(), r);
                            }
                        });
    }

    // ---- LeaderElectionDriver ---------------------------------------------------------------

    @Override
    public boolean hasLeadership() {
        return leadership.isValid();
    }

    @Override
    public void publishLeaderInformation(String componentId, LeaderInformation info) {
        if (info.isEmpty()) {
            deleteLeaderInformation(componentId);
            return;
        }
        long start = System.nanoTime();
        long budget = client.timeout().toNanos();
        long backoff = 50;
        while (true) {
            Leadership.Grant g = leadership.current().orElse(null);
            if (g == null || closed) {
                LOG.debug("Not publishing {} for {}: not the leader", info, componentId);
                return;
            }
            Map<String, Object> body = new HashMap<>();
            body.put("address", info.getLeaderAddress());
            body.put("session", info.getLeaderSessionID().toString());
            String failure;
            try {
                SidecarClient.Response r =
                        client.send(
                                "PUT",
                                "/leader/components/" + componentId,
                                Collections.singletonMap(SidecarClient.TERM_HEADER, Long.toUnsignedString(g.term)),
                                SidecarClient.JSON.writeValueAsBytes(body));
                if (r.status == 200) {
                    LOG.debug("Published {} for {} under {}", info, componentId, g);
                    watch(componentId);
                    return;
                }
                if (r.status == 409) {
                    LOG.info("Publishing {} for {} was fenced (term {} no longer leads): {}", info, componentId, g.term, r.message());
                    return;
                }
                if (r.status != 503) {
                    listener.onError(new LeaderElectionException("publishing the leader information of " + componentId + " to " + client.describe() + " failed: " + r));
                    return;
                }
                failure = r.toString();
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            } catch (IOException e) {
                failure = e.toString();
            }
            if (System.nanoTime() - start > budget) {
                listener.onError(new LeaderElectionException("cannot publish the leader information of " + componentId + " to " + client.describe() + ": " + failure));
                return;
            }
            try {
                Thread.sleep(backoff);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return;
            }
            backoff = Math.min(backoff * 2, 500);
        }
    }

    @Override
    public void deleteLeaderInformation(String componentId) {
        Leadership.Grant g = leadership.current().orElse(null);
        if (g == null) {
            LOG.debug("Not deleting the leader information of {}: not the leader", componentId);
            return;
        }
        try {
            SidecarClient.Response r =
                    client.send(
                            "DELETE",
                            "/leader/components/" + componentId,
                            Collections.singletonMap(SidecarClient.TERM_HEADER, Long.toUnsignedString(g.term)),
                            null);
            if (r.status != 204 && r.status != 200 && r.status != 404) {
                LOG.warn("Deleting the leader information of {} on {}: {}", componentId, client.describe(), r);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (IOException e) {
            LOG.warn("Deleting the leader information of {} on {}: {}", componentId, client.describe(), e.toString());
        }
    }

    /**
     * Watches what the sidecar holds for a component this driver published and tells Flink on
     * every change, so Flink re-publishes when the stored information differs from what its
     * leader confirmed (a deletion by someone else, a backend that lost it).
     */
    private void watch(String componentId) {
        watches.computeIfAbsent(
                componentId,
                id -> {
                    Thread t = new Thread(() -> watchLoop(id), "ha-sidecar-component-watch-" + id);
                    t.setDaemon(true);
                    t.start();
                    return t;
                });
    }

    private void watchLoop(String componentId) {
        long known = -1;
        long backoff = BACKOFF_MIN_MS;
        String path = "/leader/components/" + componentId;
        while (!closed) {
            try {
                SidecarClient.Response r =
                        known < 0
                                ? client.send("GET", path, Collections.emptyMap(), null)
                                : client.send(
                                        "GET",
                                        path + "?wait=" + SidecarLeaderRetrievalDriver.WAIT.getSeconds() + "s&known=" + known,
                                        Collections.emptyMap(),
                                        null,
                                        SidecarLeaderRetrievalDriver.WAIT.plus(client.timeout()));
                if (r.status == 200) {
                    JsonNode j = r.json();
                    long version = j.path("version").asLong(-1);
                    if (version >= 0 && version != known) {
                        known = version;
                        LeaderInformation info = SidecarLeaderRetrievalDriver.information(componentId, j);
                        try {
                            componentEvents.execute(
                                    () -> {
                                        if (!closed) {
                                            listener.onLeaderInformationChange(componentId, info);
                                        }
                                    });
                        } catch (RejectedExecutionException e) {
                            return; // closed
                        }
                    }
                    backoff = BACKOFF_MIN_MS;
                    continue;
                }
                LOG.debug("Watching {} on {}: {}", componentId, client.describe(), r);
            } catch (InterruptedException e) {
                return;
            } catch (IOException | RuntimeException e) {
                LOG.debug("Watching {} on {}: {}", componentId, client.describe(), e.toString());
            }
            try {
                Thread.sleep(backoff);
            } catch (InterruptedException e) {
                return;
            }
            backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
        }
    }

    @Override
    public void close() throws Exception {
        if (closed) {
            return;
        }
        closed = true;
        for (Thread t : watches.values()) {
            t.interrupt();
        }
        componentEvents.shutdownNow();
        leadership.revoke();
        abortStream();
        reader.interrupt();
        events.shutdownNow();
        events.awaitTermination(1, TimeUnit.SECONDS);
        leadership.revoke();
        String id = candidacy;
        if (id != null) {
            try {
                SidecarClient.Response r = client.send("DELETE", "/candidacy/" + id, Collections.emptyMap(), null);
                if (r.status != 204 && r.status != 404) {
                    LOG.warn("Closing candidacy {} on {}: {}", id, client.describe(), r);
                }
            } catch (IOException e) {
                LOG.warn("Closing candidacy {} on {}: {} (it expires by its TTL)", id, client.describe(), e.toString());
            }
        }
        reader.join(1000);
        LOG.info("Closed the candidacy on {}", client.describe());
    }
}
