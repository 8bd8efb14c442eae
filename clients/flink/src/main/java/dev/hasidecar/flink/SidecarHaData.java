package dev.hasidecar.flink;

import org.apache.flink.api.common.JobID;
import org.apache.flink.runtime.leaderelection.LeaderElectionDriver;
import org.apache.flink.runtime.leaderelection.LeaderInformation;
import org.apache.flink.runtime.leaderelection.LeaderInformationRegister;
import org.apache.flink.runtime.leaderelection.LeadershipLostException;
import org.apache.flink.util.FlinkException;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Iterator;
import java.util.List;
import java.util.Optional;
import java.util.UUID;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * Deleting the HA data the plugin wrote, for one job or the whole cluster: what Flink's {@code
 * AbstractHaServices.internalCleanupJobData} and {@code internalCleanup} do, the same in every
 * Flink version (the per-version {@code SidecarHaServices} delegate here).
 */
final class SidecarHaData {

    private static final Logger LOG = LoggerFactory.getLogger(SidecarHaData.class);

    private final SidecarClient client;
    private final SidecarState state;
    private final Leadership leadership;

    SidecarHaData(SidecarClient client, SidecarState state, Leadership leadership) {
        this.client = client;
        this.state = state;
        this.leadership = leadership;
    }

    /** One job is globally terminal: its checkpoints, its counter and its JobMaster's information. */
    void cleanupJob(JobID jobID) throws Exception {
        long term = leadership.fencingTerm("the HA data of job " + jobID);
        deleteAll(Keys.job(jobID), term);
        deleteComponent(Keys.jobManager(jobID), term);
    }

    /**
     * The whole cluster is done: every key under {@code flink/} and all component information,
     * fenced like every other write. Flink calls this after it closed the election driver (so
     * this JVM's candidacy and term are over, and the sidecar refuses writes from a sidecar that
     * does not lead): then this JVM campaigns once more, bounded by the request timeout, and
     * deletes under the term it gets.
     */
    void cleanupCluster() throws Exception {
        Optional<Leadership.Grant> held = leadership.current();
        if (held.isPresent()) {
            deleteEverything(held.get().term);
            return;
        }
        Leadership cleaner = new Leadership();
        CountDownLatch granted = new CountDownLatch(1);
        LeaderElectionDriver.Listener listener =
                new LeaderElectionDriver.Listener() {
                    @Override
                    public void onGrantLeadership(UUID session) {
                        granted.countDown();
                    }

                    @Override
                    public void onRevokeLeadership() {}

                    @Override
                    public void onLeaderInformationChange(String componentId, LeaderInformation info) {}

                    @Override
                    public void onLeaderInformationChange(LeaderInformationRegister register) {}

                    @Override
                    public void onError(Throwable t) {
                        LOG.warn("Campaigning to clean up the cluster's HA data: {}", t.getMessage());
                    }
                };
        LOG.info("Campaigning on {} for a term to clean up the cluster's HA data with", client.describe());
        try (SidecarLeaderElectionDriver driver = SidecarLeaderElectionDriver.create(client, listener, cleaner)) {
            if (!granted.await(client.timeout().toMillis(), TimeUnit.MILLISECONDS)) {
                throw new FlinkException(
                        "cannot clean up the cluster's HA data: "
                                + client.describe()
                                + " did not lead within "
                                + client.timeout().toMillis()
                                + " ms (another JobManager leads?); the keys under "
                                + String.join(", ", Keys.cluster())
                                + " remain");
            }
            deleteEverything(cleaner.fencingTerm("the cluster's HA data"));
        }
    }

    private void deleteEverything(long term) throws Exception {
        for (String prefix : Keys.cluster()) {
            deleteAll(prefix, term);
        }
        SidecarClient.Response r = client.send("GET", "/leader/components", Collections.emptyMap(), null);
        if (r.status != 200) {
            throw new IOException("listing the component leader information on " + client.describe() + ": " + r);
        }
        List<String> fenced = new ArrayList<>();
        for (Iterator<String> it = r.json().path("components").fieldNames(); it.hasNext(); ) {
            String component = it.next();
            if (!deleteComponent(component, term)) {
                fenced.add(component);
            }
        }
        if (!fenced.isEmpty()) {
            throw new LeadershipLostException(
                    "deleting the leader information of " + fenced + " on " + client.describe() + " was fenced: term " + term + " no longer leads");
        }
    }

    private void deleteAll(String prefix, long term) throws Exception {
        for (String key : state.list(prefix)) {
            state.delete(key, SidecarState.ANY, term);
        }
    }

    /** True when gone; false when fenced. */
    private boolean deleteComponent(String component, long term) throws Exception {
        SidecarClient.Response r =
                client.send(
                        "DELETE",
                        "/leader/components/" + component,
                        Collections.singletonMap(SidecarClient.TERM_HEADER, Long.toUnsignedString(term)),
                        null);
        if (r.status == 204 || r.status == 200 || r.status == 404) {
            return true;
        }
        if (r.status == 409) {
            return false;
        }
        throw new IOException("deleting the leader information of " + component + " on " + client.describe() + ": " + r);
    }
}
