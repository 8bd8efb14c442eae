package dev.hasidecar.flink;

import org.apache.flink.api.common.JobID;
import org.apache.flink.core.execution.RecoveryClaimMode;
import org.apache.flink.core.fs.Path;
import org.apache.flink.runtime.checkpoint.CheckpointIDCounter;
import org.apache.flink.runtime.checkpoint.CheckpointRecoveryFactory;
import org.apache.flink.runtime.checkpoint.CompletedCheckpoint;
import org.apache.flink.runtime.checkpoint.CompletedCheckpointStore;
import org.apache.flink.runtime.checkpoint.DefaultCompletedCheckpointStore;
import org.apache.flink.runtime.checkpoint.DefaultCompletedCheckpointStoreUtils;
import org.apache.flink.runtime.persistence.filesystem.FileSystemStateStorageHelper;
import org.apache.flink.runtime.state.SharedStateRegistry;
import org.apache.flink.runtime.state.SharedStateRegistryFactory;

import java.util.Collection;
import java.util.concurrent.Executor;

/**
 * A job's completed-checkpoint store (Flink's {@link DefaultCompletedCheckpointStore} on a
 * {@link SidecarStateHandleStore} under {@code flink/jobs/<job>/checkpoints/}, the checkpoint
 * metadata in files under the storage dir) and its id counter, recovered from what the sidecar
 * holds when a new leader takes the job over.
 */
final class SidecarCheckpointRecoveryFactory implements CheckpointRecoveryFactory {

    private final SidecarState state;
    private final Path storagePath;
    private final Leadership leadership;

    SidecarCheckpointRecoveryFactory(SidecarState state, Path storagePath, Leadership leadership) {
        this.state = state;
        this.storagePath = storagePath;
        this.leadership = leadership;
    }

    @Override
    public CompletedCheckpointStore createRecoveredCompletedCheckpointStore(
            JobID jobId,
            int maxNumberOfCheckpointsToRetain,
            SharedStateRegistryFactory sharedStateRegistryFactory,
            Executor ioExecutor,
            RecoveryClaimMode recoveryClaimMode)
            throws Exception {
        SidecarStateHandleStore<CompletedCheckpoint> store =
                new SidecarStateHandleStore<>(
                        state,
                        Keys.checkpoints(jobId),
                        new FileSystemStateStorageHelper<>(storagePath, "completedCheckpoint"),
                        leadership);
        Collection<CompletedCheckpoint> recovered =
                DefaultCompletedCheckpointStoreUtils.retrieveCompletedCheckpoints(store, Keys.Checkpoints.INSTANCE);
        SharedStateRegistry registry =
                sharedStateRegistryFactory.create(ioExecutor, recovered, recoveryClaimMode);
        return new DefaultCompletedCheckpointStore<>(
                maxNumberOfCheckpointsToRetain,
                store,
                Keys.Checkpoints.INSTANCE,
                recovered,
                registry,
                ioExecutor);
    }

    @Override
    public CheckpointIDCounter createCheckpointIDCounter(JobID jobId) {
        return new SidecarCheckpointIDCounter(state, Keys.counter(jobId), leadership);
    }
}
