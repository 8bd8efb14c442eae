package dev.hasidecar.flink;

import org.apache.flink.api.common.JobID;
import org.apache.flink.core.execution.RestoreMode;
import org.apache.flink.runtime.checkpoint.CheckpointIDCounter;
import org.apache.flink.runtime.checkpoint.CheckpointRecoveryFactory;
import org.apache.flink.runtime.checkpoint.CompletedCheckpointStore;
import org.apache.flink.runtime.state.SharedStateRegistryFactory;

import java.util.concurrent.Executor;

/** Flink 1.x's recovery factory (its recovery mode is a {@link RestoreMode}). */
final class SidecarCheckpointRecoveryFactory implements CheckpointRecoveryFactory {

    private final SidecarCheckpointStores stores;

    SidecarCheckpointRecoveryFactory(SidecarCheckpointStores stores) {
        this.stores = stores;
    }

    @Override
    public CompletedCheckpointStore createRecoveredCompletedCheckpointStore(
            JobID jobId,
            int maxNumberOfCheckpointsToRetain,
            SharedStateRegistryFactory sharedStateRegistryFactory,
            Executor ioExecutor,
            RestoreMode restoreMode)
            throws Exception {
        return stores.recover(
                jobId,
                maxNumberOfCheckpointsToRetain,
                recovered -> sharedStateRegistryFactory.create(ioExecutor, recovered, restoreMode),
                ioExecutor);
    }

    @Override
    public CheckpointIDCounter createCheckpointIDCounter(JobID jobId) {
        return stores.counter(jobId);
    }
}
