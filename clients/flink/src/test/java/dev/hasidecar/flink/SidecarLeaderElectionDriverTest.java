package dev.hasidecar.flink;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertNotEquals;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import org.apache.flink.runtime.leaderelection.LeaderInformation;
import org.apache.flink.runtime.leaderretrieval.DefaultLeaderRetrievalService;
import org.apache.flink.runtime.leaderretrieval.LeaderRetrievalListener;
import org.apache.flink.util.FlinkException;

import org.junit.After;
import org.junit.Before;
import org.junit.Test;

import java.time.Duration;
import java.util.ArrayList;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.UUID;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * The election and retrieval drivers against real sidecars: the checks Flink's own driver tests
 * make (ZooKeeperLeaderElectionDriverTest, the Kubernetes driver tests), plus the sidecar's
 * failure modes (a hung sidecar, a resign, a closed candidacy).
 */
public class SidecarLeaderElectionDriverTest {

    private static final Duration LONG = Duration.ofSeconds(20);

    private SidecarProcesses sidecars;
    private final List<SidecarLeaderElectionDriver> drivers = new ArrayList<>();
    private final List<RecordingListener> listeners = new ArrayList<>();

    @Before
    public void setUp() throws Exception {
        sidecars = new SidecarProcesses();
    }

    @After
    public void tearDown() throws Exception {
        for (SidecarLeaderElectionDriver d : drivers) {
            d.close();
        }
        sidecars.close();
    }

    private static final class Candidate {
        final SidecarProcesses.Sidecar sidecar;
        final SidecarLeaderElectionDriver driver;
        final RecordingListener listener;
        final Leadership leadership;

        Candidate(SidecarProcesses.Sidecar s, SidecarLeaderElectionDriver d, RecordingListener l, Leadership le) {
            sidecar = s;
            driver = d;
            listener = l;
            leadership = le;
        }
    }

    private Candidate candidate(String id) throws Exception {
        SidecarProcesses.Sidecar s = sidecars.start(id, "client");
        RecordingListener l = new RecordingListener(id);
        Leadership le = new Leadership();
        SidecarLeaderElectionDriver d = SidecarLeaderElectionDriver.create(s.client(), l, le);
        drivers.add(d);
        listeners.add(l);
        return new Candidate(s, d, l, le);
    }

    private static List<Candidate> leaders(List<Candidate> cs) {
        List<Candidate> out = new ArrayList<>();
        for (Candidate c : cs) {
            if (c.driver.hasLeadership()) {
                out.add(c);
            }
        }
        return out;
    }

    @Test
    public void threeDriversExactlyOneLeadsCloseItAndTheNextLeadsUntilNone() throws Exception {
        List<Candidate> open = new ArrayList<>();
        for (String id : new String[] {"s1", "s2", "s3"}) {
            open.add(candidate(id));
        }
        Set<UUID> sessions = new HashSet<>();
        while (!open.isEmpty()) {
            SidecarProcesses.awaitTrue("one of " + open.size() + " drivers to lead", LONG, () -> leaders(open).size() == 1);
            // Hold the check for a while: never two at once.
            long until = System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(600);
            while (System.nanoTime() < until) {
                assertTrue("more than one driver leads", leaders(open).size() <= 1);
                Thread.sleep(5);
            }
            Candidate leader = leaders(open).get(0);
            UUID session = leader.leadership.current().get().session;
            assertTrue("a session was handed out twice: " + session, sessions.add(session));
            leader.driver.close();
            assertFalse(leader.driver.hasLeadership());
            open.remove(leader);
        }
        for (RecordingListener l : listeners) {
            l.assertClean();
        }
    }

    @Test
    public void grantsAndRevokesAlternateWithANewSessionPerGrant() throws Exception {
        Candidate c = candidate("s1");
        SidecarClient admin = c.sidecar.client();
        Set<UUID> sessions = new HashSet<>();
        for (int i = 0; i < 3; i++) {
            RecordingListener.Event g = c.listener.next("grant", LONG);
            assertTrue("session " + g.session + " granted twice", sessions.add(g.session));
            assertTrue(c.driver.hasLeadership());
            assertEquals(g.session, c.leadership.current().get().session);
            SidecarClient.Response r = admin.send("POST", "/leader/resign", Collections.emptyMap(), null);
            assertTrue("resign: " + r, r.status / 100 == 2);
            c.listener.next("revoke", LONG);
        }
        c.listener.assertClean();
    }

    @Test
    public void aHungSidecarLosesTheLeadershipByTheDeadlineAndANewSessionFollows() throws Exception {
        Candidate c = candidate("s1");
        UUID first = c.listener.next("grant", LONG).session;
        c.sidecar.pause();
        long paused = System.nanoTime();
        try {
            // The last line's deadline is at most renew-deadline (1.5 s) away: no line can
            // arrive now, so the local view must expire by itself.
            SidecarProcesses.awaitTrue("hasLeadership() to expire", LONG, () -> !c.driver.hasLeadership());
            long expiredAfterMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - paused);
            assertTrue("hasLeadership() held " + expiredAfterMs + " ms after the sidecar hung", expiredAfterMs <= 1500 + 100);
            c.listener.next("revoke", LONG);
            // Stay hung past the stall bound: the driver drops the silent stream and reopens.
            long stalled = SidecarLeaderElectionDriver.STALL_NANOS + TimeUnit.MILLISECONDS.toNanos(1000);
            while (System.nanoTime() - paused < stalled) {
                Thread.sleep(50);
            }
        } finally {
            c.sidecar.resume();
        }
        UUID second = c.listener.next("grant", LONG).session;
        assertNotEquals("a new grant must carry a new session", first, second);
        c.listener.assertClean();
    }

    @Test
    public void aLeaderThatClosesHandsOverAndANonLeadersPublishHasNoEffect() throws Exception {
        Candidate a = candidate("s1");
        Candidate b = candidate("s2");
        SidecarProcesses.Sidecar observer = sidecars.start("tm", "never");
        SidecarProcesses.awaitTrue("a leader", LONG, () -> leaders(List.of(a, b)).size() == 1);
        Candidate leader = leaders(List.of(a, b)).get(0);
        Candidate follower = leader == a ? b : a;

        BlockingQueue<String> seen = new LinkedBlockingQueue<>();
        DefaultLeaderRetrievalService retrieval =
                new DefaultLeaderRetrievalService(SidecarLeaderRetrievalDriver.factory(observer.client(), "dispatcher"));
        retrieval.start(
                new LeaderRetrievalListener() {
                    @Override
                    public void notifyLeaderAddress(String address, UUID session) {
                        seen.add(address + "|" + session);
                    }

                    @Override
                    public void handleError(Exception e) {
                        seen.add("error " + e);
                    }
                });
        try {
            follower.driver.publishLeaderInformation(
                    "dispatcher", LeaderInformation.known(UUID.randomUUID(), "pekko://follower"));
            assertEquals(null, seen.poll(500, TimeUnit.MILLISECONDS));
            SidecarClient.Response r = observer.client().send("GET", "/leader/components/dispatcher", Collections.emptyMap(), null);
            assertEquals("no information from a follower: " + r, 0, r.json().path("version").asLong());

            UUID session = leader.leadership.current().get().session;
            leader.driver.publishLeaderInformation("dispatcher", LeaderInformation.known(session, "pekko://leader"));
            assertEquals("pekko://leader|" + session, seen.poll(LONG.toMillis(), TimeUnit.MILLISECONDS));

            leader.driver.publishLeaderInformation("dispatcher", LeaderInformation.empty());
            assertEquals("null|null", seen.poll(LONG.toMillis(), TimeUnit.MILLISECONDS));

            leader.driver.publishLeaderInformation("dispatcher", LeaderInformation.known(session, "pekko://leader"));
            assertEquals("pekko://leader|" + session, seen.poll(LONG.toMillis(), TimeUnit.MILLISECONDS));

            leader.driver.close();
            RecordingListener.Event g = follower.listener.next("grant", LONG);
            assertNotEquals(session, g.session);
            // The old leader's information is not handed out under the new term.
            assertEquals("null|null", seen.poll(LONG.toMillis(), TimeUnit.MILLISECONDS));
            follower.driver.publishLeaderInformation("dispatcher", LeaderInformation.known(g.session, "pekko://next"));
            assertEquals("pekko://next|" + g.session, seen.poll(LONG.toMillis(), TimeUnit.MILLISECONDS));
        } finally {
            retrieval.stop();
        }
        a.listener.assertClean();
        b.listener.assertClean();
    }

    /**
     * A JobManager JVM killed with SIGKILL while its sidecar lives: the kernel closes its
     * connection, the sidecar resigns, and the standby leads long before any lease or TTL ran
     * out (the bound asserted is the candidacy TTL, 3 s, which a sidecar that kept the
     * leadership for the dead JVM would exceed).
     */
    /** A JobManager JVM of its own (CandidateMain) on the sidecar; its stdout lines queued. */
    private static Process child(SidecarProcesses.Sidecar s, BlockingQueue<String> lines) throws Exception {
        String javaBin = java.nio.file.Paths.get(System.getProperty("java.home"), "bin", "java").toString();
        List<String> command = new ArrayList<>(Arrays.asList(javaBin, "-XX:TieredStopAtLevel=1"));
        // The log this JVM writes to: without these the child's log4j finds
        // log4j2-test.properties on the classpath but no test.log (the config's fallback).
        if (System.getProperty("test.log") != null) {
            command.add("-Dtest.log=" + System.getProperty("test.log"));
        }
        command.add("-Dlog4j.configurationFile=log4j2-test.properties");
        command.addAll(Arrays.asList("-cp", System.getProperty("java.class.path"), CandidateMain.class.getName(), s.url().toString()));
        Process child =
                new ProcessBuilder(command)
                        .redirectErrorStream(true)
                        .start();
        Thread pump = new Thread(() -> {
            try (java.io.BufferedReader out = new java.io.BufferedReader(new java.io.InputStreamReader(child.getInputStream(), java.nio.charset.StandardCharsets.UTF_8))) {
                String line;
                while ((line = out.readLine()) != null) {
                    if (line.startsWith("granted ") || line.startsWith("revoke") || line.startsWith("error")) {
                        lines.add(line);
                    } else {
                        System.err.println("[child JVM] " + line);
                    }
                }
            } catch (java.io.IOException e) {
                // the child is gone
            }
        });
        pump.setDaemon(true);
        pump.start();
        return child;
    }

    private static String nextLine(BlockingQueue<String> lines, String prefix) throws InterruptedException {
        return nextLine(lines, prefix, LONG);
    }

    /** A JVM with Flink's classpath starts in seconds, or in a minute on a loaded machine. */
    private static final Duration CHILD_START = Duration.ofSeconds(120);

    private static String nextLine(BlockingQueue<String> lines, String prefix, Duration timeout) throws InterruptedException {
        String l = lines.poll(timeout.toMillis(), TimeUnit.MILLISECONDS);
        if (l == null || !l.startsWith(prefix)) {
            throw new AssertionError("the child JVM: expected " + prefix + ", got " + l);
        }
        return l;
    }

    @Test
    public void aKilledJobManagerJvmHandsOverWithoutWaitingForTheTtl() throws Exception {
        SidecarProcesses.Sidecar s1 = sidecars.start("s1", "client");
        BlockingQueue<String> lines = new LinkedBlockingQueue<>();
        Process child = child(s1, lines);
        try {
            nextLine(lines, "granted ", CHILD_START);
            Candidate standby = candidate("s2");
            standby.listener.assertQuiet(Duration.ofMillis(500));
            long killed = System.nanoTime();
            child.destroyForcibly();
            child.waitFor();
            standby.listener.next("grant", LONG);
            long tookMs = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - killed);
            System.err.println("kill -9 of the leading JobManager JVM -> the standby granted: " + tookMs + " ms");
            assertTrue("the standby waited " + tookMs + " ms: the sidecar kept the dead JVM's leadership", tookMs < 3000);
            standby.listener.assertClean();
        } finally {
            child.destroyForcibly();
        }
    }

    /**
     * A JobManager JVM that hangs (SIGSTOP) stops renewing: its sidecar closes the candidacy by
     * the TTL and the standby leads. Resumed, the old JVM must revoke at once (its validity
     * deadline passed while it was stopped) and not lead again while the standby does.
     */
    @Test
    public void aHungJobManagerJvmLosesTheLeadershipByTheTtlAndRevokesWhenResumed() throws Exception {
        SidecarProcesses.Sidecar s1 = sidecars.start("s1", "client");
        BlockingQueue<String> lines = new LinkedBlockingQueue<>();
        Process child = child(s1, lines);
        long pid = child.pid();
        try {
            nextLine(lines, "granted ", CHILD_START);
            Candidate standby = candidate("s2");
            new ProcessBuilder("kill", "-STOP", Long.toString(pid)).start().waitFor();
            try {
                standby.listener.next("grant", LONG);
            } finally {
                new ProcessBuilder("kill", "-CONT", Long.toString(pid)).start().waitFor();
            }
            nextLine(lines, "revoke");
            assertEquals("the resumed JVM leads again while the standby leads", null, lines.poll(1500, TimeUnit.MILLISECONDS));
            assertTrue(standby.driver.hasLeadership());
            standby.listener.assertClean();
        } finally {
            child.destroyForcibly();
        }
    }

    @Test
    public void anObserverOrAnAlwaysSidecarRefusesTheCandidacyAndSaysWhatToSet() throws Exception {
        for (String mode : new String[] {"never", "always"}) {
            SidecarProcesses.Sidecar s = sidecars.start("m-" + mode, mode);
            try {
                SidecarLeaderElectionDriver.create(s.client(), new RecordingListener(mode), new Leadership()).close();
                fail("a candidacy on an election.candidacy: " + mode + " sidecar was accepted");
            } catch (SidecarConfigException e) {
                assertTrue(e.getMessage(), e.getMessage().contains("election.candidacy: client"));
                assertTrue(e.getMessage(), e.getMessage().contains(s.url().toString()));
            }
        }
    }

    @Test
    public void anUnreachableSidecarNamesTheUrlAndTheKey() throws Exception {
        int port = SidecarProcesses.freePort();
        SidecarClient client = new SidecarClient(java.net.URI.create("http://127.0.0.1:" + port), Duration.ofMillis(600));
        try {
            SidecarLeaderElectionDriver.create(client, new RecordingListener("none"), new Leadership()).close();
            fail("a driver without a sidecar");
        } catch (FlinkException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("http://127.0.0.1:" + port));
            assertTrue(e.getMessage(), e.getMessage().contains("high-availability.sidecar.url"));
        }
        try {
            SidecarHaServicesFactory.awaitSidecar(client, System.nanoTime() + TimeUnit.MILLISECONDS.toNanos(600));
            fail("no sidecar, yet awaitSidecar returned");
        } catch (FlinkException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("http://127.0.0.1:" + port));
            assertTrue(e.getMessage(), e.getMessage().contains("high-availability.sidecar.url"));
        }
    }
}
