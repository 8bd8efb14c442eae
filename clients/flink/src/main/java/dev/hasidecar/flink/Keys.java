package dev.hasidecar.flink;

import org.apache.flink.api.common.JobID;
import org.apache.flink.runtime.checkpoint.CheckpointStoreUtil;

/**
 * Where the plugin keeps what in the sidecar's state (the table in docs/flink.md), and the
 * names Flink's default stores use inside each prefix. The keys are the znode names Flink's own
 * ZooKeeper HA uses below {@code <root>/<cluster-id>/}, so that on the ZooKeeper backend (whose
 * keys are those znodes) a cluster that ran on Flink's own HA moves to the sidecar with its
 * jobs. Where the submitted jobs go differs between Flink versions (execution plans and
 * applications in 2.x, job graphs in 1.x): each version's {@code JobStoreKeys} says.
 */
final class Keys {
    /** Every job's checkpoints and counter. */
    static final String JOBS = "jobs/";

    // Component ids of the leader information, as Flink's Kubernetes HA names them.
    static final String RESOURCE_MANAGER = "resourcemanager";
    static final String DISPATCHER = "dispatcher";
    static final String REST_SERVER = "restserver";

    private Keys() {}

    /** Everything of one job: its checkpoints and its counter. */
    static String job(JobID job) {
        return JOBS + job + "/";
    }

    static String checkpoints(JobID job) {
        return job(job) + "checkpoints/";
    }

    static String counter(JobID job) {
        return job(job) + "checkpoint_id_counter";
    }

    /** Every prefix the cluster's HA data is under: what a whole-cluster cleanup deletes. */
    static String[] cluster() {
        String[] jobStores = JobStoreKeys.ALL;
        String[] all = java.util.Arrays.copyOf(jobStores, jobStores.length + 1);
        all[jobStores.length] = JOBS;
        return all;
    }

    /** The component id of a job's JobMaster: the job id in hex. */
    static String jobManager(JobID job) {
        return job.toString();
    }

    /** {@code %019d}, as Flink's ZooKeeper checkpoint store names them: sorts by id as text. */
    enum Checkpoints implements CheckpointStoreUtil {
        INSTANCE;

        @Override
        public String checkpointIDToName(long checkpointId) {
            return String.format("%019d", checkpointId);
        }

        @Override
        public long nameToCheckpointID(String name) {
            try {
                return Long.parseLong(name);
            } catch (NumberFormatException e) {
                return INVALID_CHECKPOINT_ID;
            }
        }
    }
}
