package dev.hasidecar.flink;

import org.apache.flink.configuration.Configuration;
import org.apache.flink.runtime.blob.BlobUtils;
import org.apache.flink.runtime.highavailability.ClientHighAvailabilityServices;
import org.apache.flink.runtime.highavailability.FileSystemApplicationResultStore;
import org.apache.flink.runtime.highavailability.FileSystemJobResultStore;
import org.apache.flink.runtime.highavailability.HighAvailabilityServices;
import org.apache.flink.runtime.highavailability.HighAvailabilityServicesFactory;
import org.apache.flink.util.FlinkException;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.util.Collections;
import java.util.concurrent.Executor;

/**
 * The entry point Flink loads by name: {@code high-availability.type:
 * dev.hasidecar.flink.SidecarHaServicesFactory}, with this jar in Flink's {@code lib/}.
 *
 * <p>JobManagers and TaskManagers call {@link #createHAServices} (a TaskManager never opens a
 * candidacy: that happens only when a JobManager's first contender starts); the CLI calls
 * {@link #createClientHAServices} and gets only the REST endpoint's retriever.
 */
public class SidecarHaServicesFactory implements HighAvailabilityServicesFactory {

    private static final Logger LOG = LoggerFactory.getLogger(SidecarHaServicesFactory.class);

    public SidecarHaServicesFactory() {}

    @Override
    public HighAvailabilityServices createHAServices(Configuration conf, Executor executor)
            throws Exception {
        SidecarClient client = client(conf);
        awaitSidecar(client, System.nanoTime() + client.timeout().toNanos());
        LOG.info("High availability through {}", client.describe());
        return new SidecarHaServices(
                conf,
                executor,
                client,
                new Leadership(),
                BlobUtils.createBlobStoreFromConfig(conf),
                FileSystemJobResultStore.fromConfiguration(conf, executor),
                FileSystemApplicationResultStore.fromConfiguration(conf, executor));
    }

    @Override
    public ClientHighAvailabilityServices createClientHAServices(Configuration conf)
            throws Exception {
        SidecarClient client = client(conf);
        awaitSidecar(client, System.nanoTime());
        return new SidecarClientHaServices(client);
    }

    private static SidecarClient client(Configuration conf) {
        return new SidecarClient(SidecarOptions.url(conf), SidecarOptions.requestTimeout(conf));
    }

    /**
     * Checks that the sidecar answers, retrying until {@code deadline} (a sidecar container may
     * start a moment after Flink): a missing sidecar is a start error that names the URL and the
     * key, not a stream of retries in the log.
     */
    static void awaitSidecar(SidecarClient client, long deadline) throws Exception {
        while (true) {
            String failure;
            try {
                SidecarClient.Response r = client.send("GET", "/leader", Collections.emptyMap(), null);
                if (r.status == 200 && r.json().has("leading")) {
                    return;
                }
                failure = "it answered " + r + ", which is not the ha-sidecar's GET /leader";
            } catch (IOException e) {
                failure = e.toString();
            }
            if (System.nanoTime() - deadline >= 0) {
                throw new FlinkException(
                        client.describe()
                                + " cannot be reached: "
                                + failure
                                + ". Start the sidecar beside this process (its http.listen), or set "
                                + SidecarOptions.URL.key()
                                + " to its address");
            }
            Thread.sleep(200);
        }
    }
}
