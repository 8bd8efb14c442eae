package dev.hasidecar.flink;

import org.apache.flink.api.common.ApplicationID;
import org.apache.flink.api.common.JobID;
import org.apache.flink.runtime.jobmanager.ApplicationStoreUtil;
import org.apache.flink.runtime.jobmanager.ExecutionPlanStoreUtil;

/**
 * Where Flink 2.x's submitted jobs go: its execution plans and its applications, each under a
 * prefix of its own (the rest of the layout is in {@link Keys}).
 */
final class JobStoreKeys {
    /** One pointer per submitted job: its execution plan. */
    static final String JOBS = "execution-plans/";

    static final String APPLICATIONS = "applications/";

    /** Both prefixes, for a whole-cluster cleanup. */
    static final String[] ALL = {JOBS, APPLICATIONS};

    private JobStoreKeys() {}

    enum ExecutionPlans implements ExecutionPlanStoreUtil {
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

    enum Applications implements ApplicationStoreUtil {
        INSTANCE;

        @Override
        public String applicationIdToName(ApplicationID id) {
            return id.toString();
        }

        @Override
        public ApplicationID nameToApplicationId(String name) {
            return ApplicationID.fromHexString(name);
        }
    }
}
