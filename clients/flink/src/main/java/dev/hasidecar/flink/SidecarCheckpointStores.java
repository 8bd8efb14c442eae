package dev.hasidecar.flink;

import org.apache.flink.api.common.JobID;
import org.apache.flink.core.fs.Path;
import org.apache.flink.runtime.checkpoint.CheckpointIDCounter;
import org.apache.flink.runtime.checkpoint.CompletedCheckpoint;
import org.apache.flink.runtime.checkpoint.CompletedCheckpointStore;
import org.apache.flink.runtime.checkpoint.DefaultCompletedCheckpointStore;
import org.apache.flink.runtime.checkpoint.DefaultCompletedCheckpointStoreUtils;
import org.apache.flink.runtime.persistence.filesystem.FileSystemStateStorageHelper;
import org.apache.flink.runtime.state.SharedStateRegistry;

import java.util.Collection;
import java.util.concurrent.Executor;
import java.util.function.Function;

/**
 * A job's completed-checkpoint store (Flink's {@link DefaultCompletedCheckpointStore} on a
 * {@link SidecarStateHandleStore} under {@code flink/jobs/<job>/checkpoints/}, the checkpoint
 * metadata in files under the storage dir) and its id counter, recovered from what the sidecar
 * holds when a new leader takes the job over. The same in every Flink version; only the
 * recovery mode handed to the shared state registry differs, so each version's {@code
 * SidecarCheckpointRecoveryFactory} passes the registry's construction in.
 */
final class SidecarCheckpointStores {

    private final SidecarState state;
    private final Path storagePath;
    private final Leadership leadership;

    SidecarCheckpointStores(SidecarState state, Path storagePath, Leadership leadership) {
        this.state = state;
        this.storagePath = storagePath;
        this.leadership = leadership;
    }

    CompletedCheckpointStore recover(
            JobID jobId,
            int maxNumberOfCheckpointsToRetain,
            Function<Collection<CompletedCheckpoint>, SharedStateRegistry> registryFor,
            Executor ioExecutor)
            throws Exception {
        SidecarStateHandleStore<CompletedCheckpoint> store =
                new SidecarStateHandleStore<>(
                        state,
                        Keys.checkpoints(jobId),
                        new FileSystemStateStorageHelper<>(storagePath, "completedCheckpoint"),
                        leadership);
        Collection<CompletedCheckpoint> recovered =
                DefaultCompletedCheckpointStoreUtils.retrieveCompletedCheckpoints(store, Keys.Checkpoints.INSTANCE);
        return new DefaultCompletedCheckpointStore<>(
                maxNumberOfCheckpointsToRetain,
                store,
                Keys.Checkpoints.INSTANCE,
                recovered,
                registryFor.apply(recovered),
                ioExecutor);
    }

    CheckpointIDCounter counter(JobID jobId) {
        return new SidecarCheckpointIDCounter(state, Keys.counter(jobId), leadership);
    }
}
