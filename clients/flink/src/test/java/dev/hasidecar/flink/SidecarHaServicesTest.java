package dev.hasidecar.flink;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertNotEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import org.apache.flink.api.common.JobID;
import org.apache.flink.api.common.JobStatus;
import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.HighAvailabilityOptions;
import org.apache.flink.runtime.checkpoint.CheckpointIDCounter;
import org.apache.flink.runtime.highavailability.ClientHighAvailabilityServices;
import org.apache.flink.runtime.highavailability.HighAvailabilityServices;
import org.apache.flink.runtime.leaderelection.LeaderContender;
import org.apache.flink.runtime.leaderelection.LeaderElection;
import org.apache.flink.runtime.leaderelection.LeadershipLostException;
import org.apache.flink.runtime.leaderretrieval.LeaderRetrievalListener;
import org.apache.flink.runtime.leaderretrieval.LeaderRetrievalService;
import org.apache.flink.runtime.util.EnvironmentInformation;
import org.apache.flink.util.FlinkException;

import org.junit.After;
import org.junit.Before;
import org.junit.Test;

import java.nio.charset.StandardCharsets;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.Future;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * The HA services as Flink builds them (through the factory, with Flink's own election service,
 * retrieval service and stores on top), against real sidecars: Flink's LeaderElectionTest
 * contract, the CLI's REST retriever, the checkpoint id counter, and per-job and whole-cluster
 * cleanup.
 */
public class SidecarHaServicesTest {

    private static final Duration LONG = Duration.ofSeconds(20);

    private SidecarProcesses sidecars;
    private ExecutorService io;
    private final List<AutoCloseable> closing = new ArrayList<>();

    @Before
    public void setUp() throws Exception {
        sidecars = new SidecarProcesses();
        io = Executors.newFixedThreadPool(2);
    }

    @After
    public void tearDown() throws Exception {
        for (int i = closing.size() - 1; i >= 0; i--) {
            closing.get(i).close();
        }
        io.shutdownNow();
        sidecars.close();
    }

    private Configuration conf(SidecarProcesses.Sidecar s) {
        Configuration c = new Configuration();
        c.set(HighAvailabilityOptions.HA_MODE, SidecarHaServicesFactory.class.getName());
        c.set(HighAvailabilityOptions.HA_STORAGE_PATH, sidecars.dir.resolve("ha").toUri().toString());
        c.set(HighAvailabilityOptions.HA_CLUSTER_ID, "test-cluster");
        c.set(SidecarOptions.URL, s.url().toString());
        c.set(SidecarOptions.REQUEST_TIMEOUT, Duration.ofSeconds(5));
        return c;
    }

    private HighAvailabilityServices services(SidecarProcesses.Sidecar s) throws Exception {
        HighAvailabilityServices h = new SidecarHaServicesFactory().createHAServices(conf(s), io);
        closing.add(h);
        return h;
    }

    /** A contender as Flink's own tests write it: records grants and revokes. */
    private static final class Contender implements LeaderContender {
        final BlockingQueue<Object> events = new LinkedBlockingQueue<>();

        @Override
        public void grantLeadership(UUID session) {
            events.add(session);
        }

        @Override
        public void revokeLeadership() {
            events.add("revoked");
        }

        @Override
        public void handleError(Exception e) {
            events.add(e);
        }

        Object next() throws InterruptedException {
            Object e = events.poll(LONG.toMillis(), TimeUnit.MILLISECONDS);
            if (e == null) {
                throw new AssertionError("no event within " + LONG);
            }
            if (e instanceof Exception) {
                throw new AssertionError("contender error", (Exception) e);
            }
            return e;
        }
    }

    private static final class Retrieved implements LeaderRetrievalListener {
        final BlockingQueue<String> seen = new LinkedBlockingQueue<>();

        @Override
        public void notifyLeaderAddress(String address, UUID session) {
            seen.add(address + "|" + session);
        }

        @Override
        public void handleError(Exception e) {
            seen.add("error " + e);
        }

        String next() throws InterruptedException {
            String s = seen.poll(LONG.toMillis(), TimeUnit.MILLISECONDS);
            if (s == null) {
                throw new AssertionError("no leader information within " + LONG);
            }
            return s;
        }
    }

    @Test
    public void flinksElectionServiceGrantsConfirmsPublishesAndHandsOver() throws Exception {
        SidecarProcesses.Sidecar s1 = sidecars.start("jm1", "client");
        SidecarProcesses.Sidecar s2 = sidecars.start("jm2", "client");
        SidecarProcesses.Sidecar tm = sidecars.start("tm", "never");
        HighAvailabilityServices jm1 = services(s1);
        HighAvailabilityServices jm2 = services(s2);
        HighAvailabilityServices tmServices = services(tm);

        // The TaskManager's services never campaign: no candidacy on its observer.
        Retrieved rm = new Retrieved();
        LeaderRetrievalService rmRetriever = tmServices.getResourceManagerLeaderRetriever();
        rmRetriever.start(rm);
        closing.add(rmRetriever::stop);

        Contender c1 = new Contender();
        LeaderElection e1 = jm1.getResourceManagerLeaderElection();
        e1.startLeaderElection(c1);
        UUID first = (UUID) c1.next();
        e1.confirmLeadershipAsync(first, "pekko://jm1/rm").get();
        assertEquals("pekko://jm1/rm|" + first, rm.next());
        assertTrue(e1.hasLeadershipAsync(first).get());

        Contender c2 = new Contender();
        LeaderElection e2 = jm2.getResourceManagerLeaderElection();
        e2.startLeaderElection(c2);
        assertEquals(null, c2.events.poll(500, TimeUnit.MILLISECONDS));

        // The leader's JobManager stops its contender: the driver closes, the candidacy with it.
        e1.close();
        assertEquals("revoked", c1.next());
        UUID second = (UUID) c2.next();
        assertNotEquals(first, second);
        e2.confirmLeadershipAsync(second, "pekko://jm2/rm").get();
        String next = rm.next();
        if (next.equals("null|null")) { // the old leader's information hidden first
            next = rm.next();
        }
        assertEquals("pekko://jm2/rm|" + second, next);
        e2.close();
        assertEquals("revoked", c2.next());
    }

    /**
     * Flink's self-healing, as Flink's driver tests check it: the stored information of a
     * component is deleted behind the leader's back; the driver reports the change and Flink's
     * election service publishes its confirmed information again.
     */
    @Test
    public void informationDeletedBehindTheLeadersBackIsPublishedAgain() throws Exception {
        SidecarProcesses.Sidecar s1 = sidecars.start("jm1", "client");
        HighAvailabilityServices jm = services(s1);
        Contender c = new Contender();
        LeaderElection e = jm.getDispatcherLeaderElection();
        e.startLeaderElection(c);
        closing.add(e);
        UUID session = (UUID) c.next();
        e.confirmLeadershipAsync(session, "pekko://jm1/dispatcher").get();

        Retrieved r = new Retrieved();
        LeaderRetrievalService retriever = services(s1).getDispatcherLeaderRetriever();
        retriever.start(r);
        closing.add(retriever::stop);
        assertEquals("pekko://jm1/dispatcher|" + session, r.next());

        long term = s1.client().send("GET", "/leader", Collections.emptyMap(), null).json().path("term").asLong();
        SidecarClient.Response d =
                s1.client().send("DELETE", "/leader/components/dispatcher", Collections.singletonMap(SidecarClient.TERM_HEADER, Long.toString(term)), null);
        assertEquals("external delete: " + d, 204, d.status);
        assertEquals("null|null", r.next());
        assertEquals("Flink re-published its confirmed information", "pekko://jm1/dispatcher|" + session, r.next());
    }

    @Test
    public void theCliRetrievesTheRestEndpointThroughAnObserver() throws Exception {
        SidecarProcesses.Sidecar s1 = sidecars.start("jm1", "client");
        SidecarProcesses.Sidecar cliSidecar = sidecars.start("cli", "never");
        HighAvailabilityServices jm = services(s1);
        Contender rest = new Contender();
        LeaderElection e = jm.getClusterRestEndpointLeaderElection();
        e.startLeaderElection(rest);
        closing.add(e);
        UUID session = (UUID) rest.next();
        e.confirmLeadershipAsync(session, "http://127.0.0.1:8081").get();

        ClientHighAvailabilityServices cli = new SidecarHaServicesFactory().createClientHAServices(conf(cliSidecar));
        closing.add(cli);
        Retrieved r = new Retrieved();
        LeaderRetrievalService retriever = cli.getClusterRestEndpointLeaderRetriever();
        retriever.start(r);
        closing.add(retriever::stop);
        assertEquals("http://127.0.0.1:8081|" + session, r.next());
    }

    /** Services whose state writes are fenced by a grant of s1's sidecar, held by a driver. */
    private Leadership lead(SidecarProcesses.Sidecar s) throws Exception {
        Leadership l = new Leadership();
        RecordingListener listener = new RecordingListener(s.id);
        SidecarLeaderElectionDriver d = SidecarLeaderElectionDriver.create(s.client(), listener, l);
        closing.add(d);
        listener.next("grant", LONG);
        return l;
    }

    private SidecarHaServices servicesWith(SidecarProcesses.Sidecar s, Leadership l) throws Exception {
        Configuration c = conf(s);
        SidecarHaServices h = SidecarHaServices.create(c, io, s.client(), l);
        closing.add(h);
        return h;
    }

    /**
     * The jar of the other major version fails at start with the jar to use, not later with a
     * NoSuchMethodError; the Flink this test runs on (its lib/ is the jar's own) passes.
     */
    @Test
    public void aJarForTheOtherMajorFlinkIsRefusedWithTheJarToUse() throws Exception {
        SidecarHaServicesFactory.checkFlinkVersion(EnvironmentInformation.getVersion());
        assertEquals(FlinkVersion.BUILT_FOR, EnvironmentInformation.getVersion());
        SidecarHaServicesFactory.checkFlinkVersion(FlinkVersion.LINE + ".99"); // a warning only
        boolean is2 = FlinkVersion.LINE.startsWith("2.");
        String other = is2 ? "1.20.3" : "2.3.0";
        String otherJar = is2 ? "ha-sidecar-flink-1.20.jar" : "ha-sidecar-flink-2.3.jar";
        try {
            SidecarHaServicesFactory.checkFlinkVersion(other);
            fail("the jar for Flink " + FlinkVersion.LINE + " accepted Flink " + other);
        } catch (FlinkException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("runs Flink " + other));
            assertTrue(e.getMessage(), e.getMessage().contains("ha-sidecar-flink-" + FlinkVersion.LINE + ".jar"));
            assertTrue(e.getMessage(), e.getMessage().contains("replace it with " + otherJar));
        }
        // A major release no jar is built for.
        try {
            SidecarHaServicesFactory.checkFlinkVersion("3.0.0");
            fail("the jar for Flink " + FlinkVersion.LINE + " accepted Flink 3.0.0");
        } catch (FlinkException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("no jar of the plugin is built for Flink 3.0.0"));
        }
    }

    @Test
    public void theCheckpointIdCounterCountsByCompareAndSetAndIsRemovedWhenTheJobEnds() throws Exception {
        SidecarProcesses.Sidecar s = sidecars.start("jm1", "client");
        Leadership l = lead(s);
        SidecarHaServices h = servicesWith(s, l);
        JobID job = new JobID();
        CheckpointIDCounter counter = h.getCheckpointRecoveryFactory().createCheckpointIDCounter(job);
        counter.start();
        assertEquals(CheckpointIDCounter.INITIAL_CHECKPOINT_ID, counter.get());
        assertEquals(1, counter.getAndIncrement());
        assertEquals(2, counter.getAndIncrement());
        assertEquals(3, counter.get());
        assertEquals("3", text(s, Keys.counter(job)));

        // Concurrent increments (two counters on the same key) never hand out an id twice.
        CheckpointIDCounter other = h.getCheckpointRecoveryFactory().createCheckpointIDCounter(job);
        ExecutorService pool = Executors.newFixedThreadPool(4);
        List<Future<Long>> ids = new ArrayList<>();
        for (int i = 0; i < 40; i++) {
            CheckpointIDCounter c = i % 2 == 0 ? counter : other;
            ids.add(pool.submit(c::getAndIncrement));
        }
        Set<Long> distinct = new HashSet<>();
        for (Future<Long> f : ids) {
            assertTrue("an id was handed out twice", distinct.add(f.get()));
        }
        pool.shutdown();
        assertEquals(43, counter.get());

        counter.setCount(100);
        assertEquals(100, counter.getAndIncrement());

        CheckpointIDCounter notLeading = new SidecarCheckpointIDCounter(new SidecarState(s.client()), Keys.counter(job), new Leadership());
        try {
            notLeading.getAndIncrement();
            fail("a counter moved without a grant");
        } catch (LeadershipLostException e) {
            // expected
        }
        assertEquals(101, counter.get());

        counter.shutdown(JobStatus.SUSPENDED).get();
        assertEquals("a suspended job keeps its counter for the next leader", "101", text(s, Keys.counter(job)));
        counter.shutdown(JobStatus.FINISHED).get();
        assertEquals(null, text(s, Keys.counter(job)));
    }

    @Test
    public void jobCleanupDeletesExactlyTheJobsKeysAndClusterCleanupEverything() throws Exception {
        SidecarProcesses.Sidecar s = sidecars.start("jm1", "client");
        Leadership l = lead(s);
        SidecarHaServices h = servicesWith(s, l);
        JobID done = new JobID();
        JobID running = new JobID();
        SidecarState state = new SidecarState(s.client());
        long term = l.current().get().term;
        for (JobID j : new JobID[] {done, running}) {
            h.getCheckpointRecoveryFactory().createCheckpointIDCounter(j).getAndIncrement();
            state.put(Keys.checkpoints(j) + Keys.Checkpoints.INSTANCE.checkpointIDToName(1), bytes("p"), SidecarState.ANY, term);
            state.put(JobStoreKeys.JOBS + j, bytes("plan"), SidecarState.ANY, term);
            publish(s, Keys.jobManager(j), term);
        }
        publish(s, Keys.DISPATCHER, term);

        h.globalCleanupAsync(done, io).get();

        assertTrue(state.list(Keys.job(done)).isEmpty());
        assertEquals(2, state.list(Keys.job(running)).size());
        assertEquals("submitted jobs are the job store's to remove", 2, state.list(JobStoreKeys.JOBS).size());
        assertEquals(0, component(s, Keys.jobManager(done)));
        assertTrue(component(s, Keys.jobManager(running)) > 0);
        assertTrue(component(s, Keys.DISPATCHER) > 0);

        h.cleanupAllData();
        for (String prefix : Keys.cluster()) {
            assertTrue(prefix, state.list(prefix).isEmpty());
        }
        assertEquals(0, component(s, Keys.jobManager(running)));
        assertEquals(0, component(s, Keys.DISPATCHER));
    }

    private static byte[] bytes(String s) {
        return s.getBytes(StandardCharsets.UTF_8);
    }

    private static String text(SidecarProcesses.Sidecar s, String key) throws Exception {
        return new SidecarState(s.client()).get(key).map(v -> new String(v.value, StandardCharsets.UTF_8)).orElse(null);
    }

    private static void publish(SidecarProcesses.Sidecar s, String component, long term) throws Exception {
        SidecarClient.Response r =
                s.client().send(
                        "PUT",
                        "/leader/components/" + component,
                        Collections.singletonMap(SidecarClient.TERM_HEADER, Long.toString(term)),
                        bytes("{\"address\":\"pekko://x/" + component + "\",\"session\":\"" + UUID.randomUUID() + "\"}"));
        assertEquals("publish " + component + ": " + r, 200, r.status);
    }

    private static long component(SidecarProcesses.Sidecar s, String component) throws Exception {
        SidecarClient.Response r = s.client().send("GET", "/leader/components/" + component, Collections.emptyMap(), null);
        assertEquals(200, r.status);
        return r.json().path("version").asLong();
    }

}
