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
import org.apache.flink.runtime.leaderretrieval.DefaultLeaderRetrievalService;
import org.apache.flink.runtime.leaderretrieval.LeaderRetrievalService;
import org.apache.flink.runtime.persistence.filesystem.FileSystemStateStorageHelper;

import java.util.ArrayList;
import java.util.Collections;
import java.util.Iterator;
import java.util.List;

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
     * The whole cluster is done: every key under {@code flink/} and all component information.
     * Flink calls this after it closed the election driver, so this JVM no longer holds a term:
     * the state is deleted unfenced (as Flink's ZooKeeper and Kubernetes HA delete their nodes
     * and ConfigMaps), the component information with the last term this JVM held.
     */
    @Override
    protected void internalCleanup() throws Exception {
        long term = leadership.current().map(g -> g.term).orElse(-1L);
        deleteAll(Keys.ROOT, term);
        long componentTerm = term >= 0 ? term : leadership.lastTerm();
        SidecarClient.Response r = client.send("GET", "/leader/components", Collections.emptyMap(), null);
        if (r.status != 200) {
            throw new java.io.IOException("listing the component leader information on " + client.describe() + ": " + r);
        }
        List<String> failed = new ArrayList<>();
        for (Iterator<String> it = r.json().path("components").fieldNames(); it.hasNext(); ) {
            String component = it.next();
            if (componentTerm < 0 || !deleteComponent(component, componentTerm)) {
                failed.add(component);
            }
        }
        if (!failed.isEmpty()) {
            logger.warn(
                    "Could not delete the leader information of {} on {}: this JobManager no longer holds the term it was published under; the sidecar hides it once a new leader is elected",
                    failed, client.describe());
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
