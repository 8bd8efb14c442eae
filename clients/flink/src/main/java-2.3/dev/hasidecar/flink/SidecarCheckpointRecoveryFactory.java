package dev.hasidecar.flink;

import org.apache.flink.api.common.JobID;
import org.apache.flink.core.execution.RecoveryClaimMode;
import org.apache.flink.runtime.checkpoint.CheckpointIDCounter;
import org.apache.flink.runtime.checkpoint.CheckpointRecoveryFactory;
import org.apache.flink.runtime.checkpoint.CompletedCheckpointStore;
import org.apache.flink.runtime.state.SharedStateRegistryFactory;

import java.util.concurrent.Executor;

/** Flink 2.x's recovery factory (its recovery mode is a {@link RecoveryClaimMode}). */
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
            RecoveryClaimMode recoveryClaimMode)
            throws Exception {
        return stores.recover(
                jobId,
                maxNumberOfCheckpointsToRetain,
                recovered -> sharedStateRegistryFactory.create(ioExecutor, recovered, recoveryClaimMode),
                ioExecutor);
    }

    @Override
    public CheckpointIDCounter createCheckpointIDCounter(JobID jobId) {
        return stores.counter(jobId);
    }
}
