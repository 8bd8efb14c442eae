package dev.hasidecar.flink;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertTrue;

import org.apache.flink.api.common.JobID;
import org.apache.flink.api.common.JobStatus;
import org.apache.flink.api.common.eventtime.WatermarkStrategy;
import org.apache.flink.api.common.typeinfo.Types;
import org.apache.flink.api.connector.source.util.ratelimit.RateLimiterStrategy;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.HighAvailabilityOptions;
import org.apache.flink.connector.datagen.source.DataGeneratorSource;
import org.apache.flink.connector.datagen.source.GeneratorFunction;
import org.apache.flink.runtime.jobgraph.JobGraph;
import org.apache.flink.runtime.minicluster.MiniCluster;
import org.apache.flink.runtime.minicluster.MiniClusterConfiguration;
import org.apache.flink.streaming.api.environment.StreamExecutionEnvironment;
import org.apache.flink.streaming.api.functions.sink.v2.DiscardingSink;

import org.apache.flink.shaded.jackson2.com.fasterxml.jackson.databind.JsonNode;

import org.junit.After;
import org.junit.Before;
import org.junit.Test;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.Collections;
import java.util.List;
import java.util.concurrent.TimeUnit;

/**
 * Flink itself on the plugin: a MiniCluster whose HA services are loaded by name from {@code
 * high-availability.type} (the same path a JobManager takes), running a job that checkpoints
 * every 200 ms. Checks what Flink writes through the sidecar, that a second cluster recovers
 * the job and its checkpoints from it, and that cancelling the job and shutting down clean up.
 */
public class SidecarMiniClusterTest {

    private static final Duration LONG = Duration.ofSeconds(60);

    private SidecarProcesses sidecars;
    private SidecarProcesses.Sidecar sidecar;
    private MiniCluster cluster;

    @Before
    public void setUp() throws Exception {
        sidecars = new SidecarProcesses();
        // Longer timings than the driver tests: a MiniCluster and a sidecar on 2 shared cores can
        // stall for more than a second, and each lapse is a (safe) revoke and a new term, which
        // is not what this test is about.
        // (On ZooKeeper the renew deadline must stay below the session timeout, 4 s.)
        sidecar =
                sidecars.start(
                        "jm",
                        "client",
                        sidecars.backend.equals("zookeeper")
                                ? "timing: {lease: 5s, renew-deadline: 3500ms, retry-period: 1s}\n"
                                : "timing: {lease: 8s, renew-deadline: 6s, retry-period: 1s}\n");
    }

    @After
    public void tearDown() throws Exception {
        if (cluster != null) {
            cluster.closeAsync().get(LONG.toMillis(), TimeUnit.MILLISECONDS);
        }
        sidecars.close();
    }

    private MiniCluster startCluster() throws Exception {
        Configuration conf = new Configuration();
        conf.set(HighAvailabilityOptions.HA_MODE, SidecarHaServicesFactory.class.getName());
        conf.set(HighAvailabilityOptions.HA_STORAGE_PATH, sidecars.dir.resolve("ha").toUri().toString());
        conf.set(HighAvailabilityOptions.HA_CLUSTER_ID, "minicluster");
        conf.set(SidecarOptions.URL, sidecar.url().toString());
        conf.setString("execution.checkpointing.dir", sidecars.dir.resolve("checkpoints").toUri().toString());
        MiniCluster c =
                new MiniCluster(
                        new MiniClusterConfiguration.Builder()
                                .setConfiguration(conf)
                                .setNumTaskManagers(1)
                                .setNumSlotsPerTaskManager(1)
                                .setHaServices(MiniCluster.HaServices.CONFIGURED)
                                .withRandomPorts()
                                .build());
        c.start();
        return c;
    }

    private static JobGraph countingJob() {
        StreamExecutionEnvironment env = StreamExecutionEnvironment.getExecutionEnvironment();
        env.setParallelism(1);
        env.enableCheckpointing(200);
        env.fromSource(
                        new DataGeneratorSource<>(
                                (GeneratorFunction<Long, Long>) i -> i,
                                Long.MAX_VALUE,
                                RateLimiterStrategy.perSecond(20),
                                Types.LONG),
                        WatermarkStrategy.noWatermarks(),
                        "numbers")
                .sinkTo(new DiscardingSink<>());
        return env.getStreamGraph().getJobGraph();
    }

    private List<String> keys(String prefix) throws Exception {
        return new SidecarState(sidecar.client()).list(prefix);
    }

    private long counter(JobID job) throws Exception {
        return new SidecarState(sidecar.client())
                .get(Keys.counter(job))
                .map(v -> Long.parseLong(new String(v.value, StandardCharsets.UTF_8)))
                .orElse(0L);
    }

    private long componentVersion(String component) throws Exception {
        return sidecar.client()
                .send("GET", "/leader/components/" + component, Collections.emptyMap(), null)
                .json()
                .path("version")
                .asLong();
    }

    /** The id of the checkpoint the job was restored from, per Flink's REST API. */
    private long restoredCheckpoint(JobID job) throws Exception {
        SidecarClient rest = new SidecarClient(cluster.getRestAddress().get(), Duration.ofSeconds(5));
        long[] id = {-1};
        SidecarProcesses.awaitTrue("job " + job + " to report its restored checkpoint", LONG, () -> {
            try {
                SidecarClient.Response r = rest.send("GET", "/jobs/" + job + "/checkpoints", Collections.emptyMap(), null);
                JsonNode restored = r.json().path("latest").path("restored");
                if (restored.isObject()) {
                    id[0] = restored.path("id").asLong();
                    return true;
                }
                return false;
            } catch (Exception e) {
                return false;
            }
        });
        return id[0];
    }

    private void awaitRunning(JobID job) throws Exception {
        SidecarProcesses.awaitTrue("job " + job + " RUNNING", LONG, () -> {
            try {
                return cluster.getJobStatus(job).get() == JobStatus.RUNNING;
            } catch (Exception e) {
                return false;
            }
        });
    }

    private void awaitCounterAbove(JobID job, long n) throws Exception {
        SidecarProcesses.awaitTrue("checkpoint id counter of " + job + " above " + n, LONG, () -> {
            try {
                return counter(job) > n;
            } catch (Exception e) {
                return false;
            }
        });
    }

    @Test
    public void aJobCheckpointsThroughTheSidecarIsRecoveredByTheNextClusterAndCleanedUp() throws Exception {
        cluster = startCluster();
        JobGraph graph = countingJob();
        JobID job = graph.getJobID();
        cluster.submitJob(graph).get();
        awaitRunning(job);
        awaitCounterAbove(job, 3);

        assertEquals(Collections.singletonList(JobStoreKeys.JOBS + job), keys(JobStoreKeys.JOBS));
        List<String> checkpoints = keys(Keys.checkpoints(job));
        assertTrue("retained checkpoint pointers: " + checkpoints, !checkpoints.isEmpty());
        for (String c : new String[] {Keys.DISPATCHER, Keys.RESOURCE_MANAGER, Keys.REST_SERVER, Keys.jobManager(job)}) {
            assertTrue(c + " published", componentVersion(c) > 0);
        }

        // The JobManager goes away without cleaning HA data (a failover): the next one recovers
        // the job from the execution plan and goes on from the counter and checkpoints.
        cluster.closeAsyncWithoutCleaningHighAvailabilityData().get(LONG.toMillis(), TimeUnit.MILLISECONDS);
        cluster = null;
        long before = counter(job);
        assertTrue("the checkpoints survive the JobManager", !keys(Keys.checkpoints(job)).isEmpty());
        assertEquals(1, keys(JobStoreKeys.JOBS).size());

        long latest = 0;
        for (String k : keys(Keys.checkpoints(job))) {
            latest = Math.max(latest, Keys.Checkpoints.INSTANCE.nameToCheckpointID(k.substring(Keys.checkpoints(job).length())));
        }
        assertTrue("the retained checkpoints' ids are below the counter", latest > 0 && latest < before);

        cluster = startCluster();
        awaitRunning(job);
        assertEquals("the new JobManager restored the latest completed checkpoint", latest, restoredCheckpoint(job));
        awaitCounterAbove(job, before + 2);

        cluster.cancelJob(job).get();
        SidecarProcesses.awaitTrue("the job's HA data to be cleaned up", LONG, () -> {
            try {
                return keys(Keys.job(job)).isEmpty() && keys(JobStoreKeys.JOBS).isEmpty() && componentVersion(Keys.jobManager(job)) == 0;
            } catch (Exception e) {
                return false;
            }
        });

        cluster.closeAsync().get(LONG.toMillis(), TimeUnit.MILLISECONDS);
        cluster = null;
        for (String prefix : Keys.cluster()) {
            assertEquals(prefix, Collections.emptyList(), keys(prefix));
        }
    }

    @Test
    public void shuttingDownTheClusterWithARunningJobRemovesItsHaData() throws Exception {
        cluster = startCluster();
        JobGraph graph = countingJob();
        JobID job = graph.getJobID();
        cluster.submitJob(graph).get();
        awaitRunning(job);
        awaitCounterAbove(job, 2);
        cluster.closeAsync().get(LONG.toMillis(), TimeUnit.MILLISECONDS);
        cluster = null;
        for (String prefix : Keys.cluster()) {
            assertEquals(prefix, Collections.emptyList(), keys(prefix));
        }
    }
}
