package dev.hasidecar.flink;

import org.apache.flink.api.common.JobID;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.core.fs.Path;
import org.apache.flink.runtime.blob.BlobStoreService;
import org.apache.flink.runtime.checkpoint.CheckpointRecoveryFactory;
import org.apache.flink.runtime.highavailability.AbstractHaServices;
import org.apache.flink.runtime.highavailability.ApplicationResultStore;
import org.apache.flink.runtime.highavailability.HighAvailabilityServicesUtils;
import org.apache.flink.runtime.highavailability.JobResultStore;
import org.apache.flink.runtime.jobmanager.ApplicationStore;
import org.apache.flink.runtime.jobmanager.DefaultApplicationStore;
import org.apache.flink.runtime.jobmanager.DefaultExecutionPlanStore;
import org.apache.flink.runtime.jobmanager.ExecutionPlanStore;
import org.apache.flink.runtime.jobmanager.NoOpExecutionPlanStoreWatcher;
import org.apache.flink.runtime.leaderelection.LeaderElectionDriver;
import org.apache.flink.runtime.leaderelection.LeaderInformation;
import org.apache.flink.runtime.leaderelection.LeaderInformationRegister;
import org.apache.flink.runtime.leaderelection.LeadershipLostException;
import org.apache.flink.runtime.leaderretrieval.DefaultLeaderRetrievalService;
import org.apache.flink.runtime.leaderretrieval.LeaderRetrievalService;
import org.apache.flink.runtime.persistence.filesystem.FileSystemStateStorageHelper;
import org.apache.flink.util.FlinkException;

import java.util.ArrayList;
import java.util.Collections;
import java.util.Iterator;
import java.util.List;
import java.util.Optional;
import java.util.UUID;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

/**
 * Flink's HA services on the sidecar (the shape of Flink's {@code
 * KubernetesLeaderElectionHaServices}): election and retrieval through the sidecar, execution
 * plans, applications and checkpoints through Flink's default stores on {@link
 * SidecarStateHandleStore}, job and application results and blobs in Flink's storage dir as
 * with Flink's own HA.
 */
final class SidecarHaServices extends AbstractHaServices {

    private final SidecarClient client;
    private final SidecarState state;
    private final Leadership leadership;
    private final Path storagePath;

    SidecarHaServices(
            Configuration conf,
            java.util.concurrent.Executor ioExecutor,
            SidecarClient client,
            Leadership leadership,
            BlobStoreService blobStore,
            JobResultStore jobResults,
            ApplicationResultStore applicationResults) {
        super(
                conf,
                new SidecarLeaderElectionDriverFactory(client, leadership),
                ioExecutor,
                blobStore,
                jobResults,
                applicationResults);
        this.client = client;
        this.state = new SidecarState(client);
        this.leadership = leadership;
        this.storagePath = HighAvailabilityServicesUtils.getClusterHighAvailableStoragePath(conf);
    }

    @Override
    protected LeaderRetrievalService createLeaderRetrievalService(String componentId) {
        return new DefaultLeaderRetrievalService(
                SidecarLeaderRetrievalDriver.factory(client, componentId));
    }

    @Override
    protected CheckpointRecoveryFactory createCheckpointRecoveryFactory() {
        return new SidecarCheckpointRecoveryFactory(state, storagePath, leadership);
    }

    @Override
    protected ExecutionPlanStore createExecutionPlanStore() throws Exception {
        return new DefaultExecutionPlanStore<>(
                new SidecarStateHandleStore<>(
                        state,
                        Keys.EXECUTION_PLANS,
                        new FileSystemStateStorageHelper<>(storagePath, "submittedExecutionPlan"),
                        leadership),
                NoOpExecutionPlanStoreWatcher.INSTANCE,
                Keys.ExecutionPlans.INSTANCE);
    }

    @Override
    protected ApplicationStore createApplicationStore() throws Exception {
        return new DefaultApplicationStore<>(
                new SidecarStateHandleStore<>(
                        state,
                        Keys.APPLICATIONS,
                        new FileSystemStateStorageHelper<>(storagePath, "submittedApplication"),
                        leadership),
                Keys.Applications.INSTANCE);
    }

    @Override
    protected void internalClose() {}

    /**
     * The whole cluster is done: every key under {@code flink/} and all component information,
     * fenced like every other write. Flink calls this after it closed the election driver (so
     * this JVM's candidacy and term are over, and the sidecar refuses writes from a sidecar that
     * does not lead): then this JVM campaigns once more, bounded by the request timeout, and
     * deletes under the term it gets.
     */
    @Override
    protected void internalCleanup() throws Exception {
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
                        logger.warn("Campaigning to clean up the cluster's HA data: {}", t.getMessage());
                    }
                };
        logger.info("Campaigning on {} for a term to clean up the cluster's HA data with", client.describe());
        try (SidecarLeaderElectionDriver driver = SidecarLeaderElectionDriver.create(client, listener, cleaner)) {
            if (!granted.await(client.timeout().toMillis(), TimeUnit.MILLISECONDS)) {
                throw new FlinkException(
                        "cannot clean up the cluster's HA data: "
                                + client.describe()
                                + " did not lead within "
                                + client.timeout().toMillis()
                                + " ms (another JobManager leads?); the keys under "
                                + Keys.ROOT
                                + " remain");
            }
            deleteEverything(cleaner.fencingTerm("the cluster's HA data"));
        }
    }

    private void deleteEverything(long term) throws Exception {
        deleteAll(Keys.ROOT, term);
        SidecarClient.Response r = client.send("GET", "/leader/components", Collections.emptyMap(), null);
        if (r.status != 200) {
            throw new java.io.IOException("listing the component leader information on " + client.describe() + ": " + r);
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

    /** One job is globally terminal: its checkpoints, its counter and its JobMaster's information. */
    @Override
    protected void internalCleanupJobData(JobID jobID) throws Exception {
        long term = leadership.fencingTerm("the HA data of job " + jobID);
        deleteAll(Keys.job(jobID), term);
        deleteComponent(Keys.jobManager(jobID), term);
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
        throw new java.io.IOException("deleting the leader information of " + component + " on " + client.describe() + ": " + r);
    }

    @Override
    protected String getLeaderPathForResourceManager() {
        return Keys.RESOURCE_MANAGER;
    }

    @Override
    protected String getLeaderPathForDispatcher() {
        return Keys.DISPATCHER;
    }

    @Override
    protected String getLeaderPathForJobManager(JobID jobID) {
        return Keys.jobManager(jobID);
    }

    @Override
    protected String getLeaderPathForRestServer() {
        return Keys.REST_SERVER;
    }


}
