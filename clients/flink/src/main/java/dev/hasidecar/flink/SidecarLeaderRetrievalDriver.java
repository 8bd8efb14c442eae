package dev.hasidecar.flink;

import org.apache.flink.runtime.leaderelection.LeaderInformation;
import org.apache.flink.runtime.leaderretrieval.LeaderRetrievalDriver;
import org.apache.flink.runtime.leaderretrieval.LeaderRetrievalDriverFactory;
import org.apache.flink.runtime.leaderretrieval.LeaderRetrievalEventHandler;
import org.apache.flink.runtime.rpc.FatalErrorHandler;
import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;
import org.apache.flink.util.FlinkException;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.time.Duration;
import java.util.Collections;
import java.util.UUID;

/**
 * Pushes one component's leader information to Flink whenever it changes: a daemon thread
 * long-polls {@code GET /leader/components/{id}?wait=30s&known=<version>}, so a change arrives
 * within milliseconds and an idle retriever costs one request per 30 s.
 *
 * <p>Errors (sidecar restarting, 503) are retried with backoff and keep the last information
 * (Flink's own heartbeats notice a dead leader); answers that retrying cannot fix (the
 * sidecar has no such API, the component id is refused) go to the {@link FatalErrorHandler}.
 */
final class SidecarLeaderRetrievalDriver implements LeaderRetrievalDriver {

    private static final Logger LOG = LoggerFactory.getLogger(SidecarLeaderRetrievalDriver.class);

    static final Duration WAIT = Duration.ofSeconds(30);
    private static final long BACKOFF_MIN_MS = 100;
    private static final long BACKOFF_MAX_MS = 5000;

    private final SidecarClient client;
    private final String componentId;
    private final LeaderRetrievalEventHandler handler;
    private final FatalErrorHandler fatal;
    private final Thread thread;
    private volatile boolean running = true;

    SidecarLeaderRetrievalDriver(
            SidecarClient client,
            String componentId,
            LeaderRetrievalEventHandler handler,
            FatalErrorHandler fatal) {
        this.client = client;
        this.componentId = componentId;
        this.handler = handler;
        this.fatal = fatal;
        this.thread = new Thread(this::run, "ha-sidecar-retrieval-" + componentId);
        this.thread.setDaemon(true);
        this.thread.start();
    }

    static LeaderRetrievalDriverFactory factory(SidecarClient client, String componentId) {
        return (handler, fatal) -> new SidecarLeaderRetrievalDriver(client, componentId, handler, fatal);
    }

    private void run() {
        long known = -1;
        long backoff = BACKOFF_MIN_MS;
        int failures = 0;
        String path = "/leader/components/" + componentId;
        while (running) {
            String failure;
            try {
                SidecarClient.Response r =
                        known < 0
                                ? client.send("GET", path, Collections.emptyMap(), null)
                                : client.send(
                                        "GET",
                                        path + "?wait=" + WAIT.getSeconds() + "s&known=" + known,
                                        Collections.emptyMap(),
                                        null,
                                        WAIT.plus(client.timeout()));
                if (r.status == 200) {
                    JsonNode j = r.json();
                    long version = j.path("version").asLong(-1);
                    if (version < 0) {
                        throw new IOException("an answer without a version: " + r);
                    }
                    if (version != known) {
                        handler.notifyLeaderAddress(information(componentId, j));
                        known = version;
                    }
                    backoff = BACKOFF_MIN_MS;
                    failures = 0;
                    continue;
                }
                if (r.status == 400 || r.status == 404 || r.status == 405) {
                    running = false;
                    fatal.onFatalError(
                            new FlinkException(
                                    "cannot retrieve the leader of "
                                            + componentId
                                            + " from "
                                            + client.describe()
                                            + ": "
                                            + r
                                            + (r.status == 400 ? "" : " (a sidecar older than this plugin? upgrade it)")));
                    return;
                }
                failure = r.toString();
            } catch (InterruptedException e) {
                return;
            } catch (IOException | RuntimeException e) {
                failure = e.toString();
            }
            if (!running) {
                return;
            }
            failures++;
            if (failures == 1 || failures % 20 == 0) {
                LOG.warn(
                        "Retrieving the leader of {} from {} failed (attempt {}): {}; retrying",
                        componentId, client.describe(), failures, failure);
            }
            try {
                Thread.sleep(backoff);
            } catch (InterruptedException e) {
                return;
            }
            backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
        }
    }

    /** The information in a {@code GET /leader/components/{id}} answer; empty when there is none. */
    static LeaderInformation information(String componentId, JsonNode j) {
        JsonNode address = j.path("address");
        JsonNode session = j.path("session");
        if (!address.isTextual() || !session.isTextual()) {
            return LeaderInformation.empty();
        }
        try {
            return LeaderInformation.known(UUID.fromString(session.asText()), address.asText());
        } catch (IllegalArgumentException e) {
            LOG.warn("The leader information of {} has no valid session id: {}", componentId, j);
            return LeaderInformation.empty();
        }
    }

    @Override
    public void close() throws Exception {
        running = false;
        thread.interrupt();
        thread.join(1000);
    }
}
