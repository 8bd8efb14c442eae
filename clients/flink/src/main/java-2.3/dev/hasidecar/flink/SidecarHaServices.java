package dev.hasidecar.flink;

import org.apache.flink.api.common.JobID;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.core.fs.Path;
import org.apache.flink.runtime.blob.BlobUtils;
import org.apache.flink.runtime.checkpoint.CheckpointRecoveryFactory;
import org.apache.flink.runtime.highavailability.AbstractHaServices;
import org.apache.flink.runtime.highavailability.FileSystemApplicationResultStore;
import org.apache.flink.runtime.highavailability.FileSystemJobResultStore;
import org.apache.flink.runtime.highavailability.HighAvailabilityServicesUtils;
import org.apache.flink.runtime.jobmanager.ApplicationStore;
import org.apache.flink.runtime.jobmanager.DefaultApplicationStore;
import org.apache.flink.runtime.jobmanager.DefaultExecutionPlanStore;
import org.apache.flink.runtime.jobmanager.ExecutionPlanStore;
import org.apache.flink.runtime.jobmanager.NoOpExecutionPlanStoreWatcher;
import org.apache.flink.runtime.leaderretrieval.DefaultLeaderRetrievalService;
import org.apache.flink.runtime.leaderretrieval.LeaderRetrievalService;
import org.apache.flink.runtime.persistence.filesystem.FileSystemStateStorageHelper;

import java.util.concurrent.Executor;

/**
 * Flink 2.x's HA services on the sidecar (the shape of Flink's {@code
 * KubernetesLeaderElectionHaServices}): election and retrieval through the sidecar, execution
 * plans, applications and checkpoints through Flink's default stores on {@link
 * SidecarStateHandleStore}, job and application results and blobs in Flink's storage dir as
 * with Flink's own HA. Cleanup is {@link SidecarHaData}'s, the same in 1.x.
 */
final class SidecarHaServices extends AbstractHaServices {

    private final SidecarClient client;
    private final SidecarState state;
    private final Leadership leadership;
    private final Path storagePath;
    private final SidecarHaData data;

    /** The services of one JobManager or TaskManager, Flink's own stores built from {@code conf}. */
    static SidecarHaServices create(
            Configuration conf, Executor ioExecutor, SidecarClient client, Leadership leadership)
            throws Exception {
        return new SidecarHaServices(conf, ioExecutor, client, leadership);
    }

    private SidecarHaServices(
            Configuration conf, Executor ioExecutor, SidecarClient client, Leadership leadership)
            throws Exception {
        super(
                conf,
                new SidecarLeaderElectionDriverFactory(client, leadership),
                ioExecutor,
                BlobUtils.createBlobStoreFromConfig(conf),
                FileSystemJobResultStore.fromConfiguration(conf, ioExecutor),
                FileSystemApplicationResultStore.fromConfiguration(conf, ioExecutor));
        this.client = client;
        this.state = new SidecarState(client);
        this.leadership = leadership;
        this.storagePath = HighAvailabilityServicesUtils.getClusterHighAvailableStoragePath(conf);
        this.data = new SidecarHaData(client, state, leadership);
    }

    @Override
    protected LeaderRetrievalService createLeaderRetrievalService(String componentId) {
        return new DefaultLeaderRetrievalService(
                SidecarLeaderRetrievalDriver.factory(client, componentId));
    }

    @Override
    protected CheckpointRecoveryFactory createCheckpointRecoveryFactory() {
        return new SidecarCheckpointRecoveryFactory(
                new SidecarCheckpointStores(state, storagePath, leadership));
    }

    @Override
    protected ExecutionPlanStore createExecutionPlanStore() throws Exception {
        return new DefaultExecutionPlanStore<>(
                new SidecarStateHandleStore<>(
                        state,
                        JobStoreKeys.JOBS,
                        new FileSystemStateStorageHelper<>(storagePath, "submittedExecutionPlan"),
                        leadership),
                NoOpExecutionPlanStoreWatcher.INSTANCE,
                JobStoreKeys.ExecutionPlans.INSTANCE);
    }

    @Override
    protected ApplicationStore createApplicationStore() throws Exception {
        return new DefaultApplicationStore<>(
                new SidecarStateHandleStore<>(
                        state,
                        JobStoreKeys.APPLICATIONS,
                        new FileSystemStateStorageHelper<>(storagePath, "submittedApplication"),
                        leadership),
                JobStoreKeys.Applications.INSTANCE);
    }

    @Override
    protected void internalClose() {}

    @Override
    protected void internalCleanup() throws Exception {
        data.cleanupCluster();
    }

    @Override
    protected void internalCleanupJobData(JobID jobID) throws Exception {
        data.cleanupJob(jobID);
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
