package dev.hasidecar.flink;

import org.apache.flink.configuration.Configuration;
import org.apache.flink.runtime.highavailability.ClientHighAvailabilityServices;
import org.apache.flink.runtime.highavailability.HighAvailabilityServices;
import org.apache.flink.runtime.highavailability.HighAvailabilityServicesFactory;
import org.apache.flink.runtime.util.EnvironmentInformation;
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
 *
 * <p>The same class name in the jar for every Flink version (an operator swaps only the jar);
 * the version's own {@code SidecarHaServices} is compiled into each.
 */
public class SidecarHaServicesFactory implements HighAvailabilityServicesFactory {

    private static final Logger LOG = LoggerFactory.getLogger(SidecarHaServicesFactory.class);

    public SidecarHaServicesFactory() {}

    @Override
    public HighAvailabilityServices createHAServices(Configuration conf, Executor executor)
            throws Exception {
        checkFlinkVersion(EnvironmentInformation.getVersion());
        SidecarClient client = client(conf);
        awaitSidecar(client, System.nanoTime() + client.timeout().toNanos());
        LOG.info("High availability through {} (the plugin's jar for Flink {})", client.describe(), FlinkVersion.LINE);
        return SidecarHaServices.create(conf, executor, client, new Leadership());
    }

    @Override
    public ClientHighAvailabilityServices createClientHAServices(Configuration conf)
            throws Exception {
        SidecarClient client = client(conf);
        awaitSidecar(client, System.nanoTime());
        return new SidecarClientHaServices(client);
    }

    /**
     * The jar of another Flink major version would fail later with a bare {@code
     * NoSuchMethodError} (the HA services' base class differs between 1.x and 2.x): refuse it
     * at once, naming the jar to use. Another minor release of the same major is let through
     * with a warning; an unknown version (Flink's own classes not packaged) is not checked.
     */
    static void checkFlinkVersion(String running) throws FlinkException {
        String major = FlinkVersion.BUILT_FOR.substring(0, FlinkVersion.BUILT_FOR.indexOf('.') + 1);
        if (running == null || running.isEmpty() || !Character.isDigit(running.charAt(0))) {
            LOG.warn("Cannot tell which Flink version runs ({}); this is the plugin's jar for Flink {}", running, FlinkVersion.BUILT_FOR);
            return;
        }
        if (!running.startsWith(major)) {
            String jar =
                    running.startsWith("1.")
                            ? "ha-sidecar-flink-1.20.jar"
                            : running.startsWith("2.") ? "ha-sidecar-flink-2.3.jar" : null;
            throw new FlinkException(
                    "this process runs Flink "
                            + running
                            + " but lib/ holds the ha-sidecar plugin's jar for Flink "
                            + FlinkVersion.LINE
                            + " (ha-sidecar-flink-"
                            + FlinkVersion.LINE
                            + ".jar)"
                            + (jar == null ? "; no jar of the plugin is built for Flink " + running : ": replace it with " + jar));
        }
        if (!running.startsWith(FlinkVersion.LINE + ".") && !running.equals(FlinkVersion.LINE)) {
            LOG.warn("This process runs Flink {}; the plugin's jar was built and tested for Flink {}", running, FlinkVersion.BUILT_FOR);
        }
    }

    private static SidecarClient client(Configuration conf) {
        return new SidecarClient(
                SidecarOptions.url(conf), SidecarOptions.requestTimeout(conf), SidecarOptions.token(conf));
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
