package dev.hasidecar.flink;

import org.apache.flink.api.common.JobID;
import org.apache.flink.runtime.checkpoint.CheckpointStoreUtil;

/**
 * Where the plugin keeps what in the sidecar's state (the table in docs/flink.md), and the
 * names Flink's default stores use inside each prefix. Where the submitted jobs go differs
 * between Flink versions (execution plans and applications in 2.x, job graphs in 1.x): each
 * version's {@code JobStoreKeys} says.
 */
final class Keys {
    /** Everything the plugin writes to {@code /state} is under this prefix. */
    static final String ROOT = "flink/";

    // Component ids of the leader information, as Flink's Kubernetes HA names them.
    static final String RESOURCE_MANAGER = "resourcemanager";
    static final String DISPATCHER = "dispatcher";
    static final String REST_SERVER = "restserver";

    private Keys() {}

    /** Everything of one job: its checkpoints and its counter. */
    static String job(JobID job) {
        return ROOT + "jobs/" + job + "/";
    }

    static String checkpoints(JobID job) {
        return job(job) + "checkpoints/";
    }

    static String counter(JobID job) {
        return job(job) + "counter";
    }

    /** The component id of a job's JobMaster: the job id in hex. */
    static String jobManager(JobID job) {
        return job.toString();
    }

    /** {@code checkpointID-%019d}: sorts by id as text. */
    enum Checkpoints implements CheckpointStoreUtil {
        INSTANCE;

        private static final String PREFIX = "checkpointID-";

        @Override
        public String checkpointIDToName(long checkpointId) {
            return String.format("%s%019d", PREFIX, checkpointId);
        }

        @Override
        public long nameToCheckpointID(String name) {
            try {
                return Long.parseLong(name.substring(PREFIX.length()));
            } catch (NumberFormatException | IndexOutOfBoundsException e) {
                return INVALID_CHECKPOINT_ID;
            }
        }
    }
}
