package dev.hasidecar.flink;

import org.apache.flink.api.common.JobID;
import org.apache.flink.runtime.jobmanager.JobGraphStoreUtil;

/**
 * Where Flink 1.x's submitted jobs go: its job graphs (1.x has no execution plans and no
 * applications), under {@code jobgraphs/} as Flink 1.x's own ZooKeeper HA keeps them. A prefix of
 * its own, not 2.x's {@code execution-plans/}: a 2.x JobManager started on a 1.20 cluster's data
 * must not try to read a 1.20 job graph as an execution plan.
 */
final class JobStoreKeys {
    /** One pointer per submitted job: its job graph. */
    static final String JOBS = "jobgraphs/";

    /** For a whole-cluster cleanup. */
    static final String[] ALL = {JOBS};

    private JobStoreKeys() {}

    enum JobGraphs implements JobGraphStoreUtil {
        INSTANCE;

        @Override
        public String jobIDToName(JobID jobId) {
            return jobId.toString();
        }

        @Override
        public JobID nameToJobID(String name) {
            return JobID.fromHexString(name);
        }
    }
}
