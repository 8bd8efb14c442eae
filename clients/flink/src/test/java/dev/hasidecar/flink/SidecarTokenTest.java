package dev.hasidecar.flink;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import org.apache.flink.configuration.Configuration;
import org.apache.flink.configuration.HighAvailabilityOptions;
import org.apache.flink.configuration.IllegalConfigurationException;
import org.apache.flink.runtime.highavailability.HighAvailabilityServices;
import org.apache.flink.runtime.leaderelection.LeaderContender;
import org.apache.flink.runtime.leaderelection.LeaderElection;

import org.junit.After;
import org.junit.Before;
import org.junit.Test;

import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.security.SecureRandom;
import java.time.Duration;
import java.util.Collections;
import java.util.HashMap;
import java.util.Map;
import java.util.UUID;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * A sidecar whose write API needs a bearer token ({@code http.token-file}): the plugin reads
 * the token from {@code high-availability.sidecar.token-file} and a JobManager leads and writes
 * through it; without the token, or with another, the sidecar refuses the write and says which key
 * to set; a token file that cannot be read is a config error naming the key.
 */
public class SidecarTokenTest {

    private static final Duration LONG = Duration.ofSeconds(20);

    private SidecarProcesses sidecars;
    private ExecutorService io;
    private Path tokenFile;
    private String token;

    @Before
    public void setUp() throws Exception {
        sidecars = new SidecarProcesses();
        io = Executors.newFixedThreadPool(2);
        byte[] raw = new byte[24];
        new SecureRandom().nextBytes(raw);
        StringBuilder hex = new StringBuilder();
        for (byte b : raw) {
            hex.append(String.format("%02x", b));
        }
        token = hex.toString();
        tokenFile = sidecars.dir.resolve("api-token");
        Files.write(tokenFile, (token + "\n").getBytes(StandardCharsets.UTF_8));
    }

    @After
    public void tearDown() throws Exception {
        io.shutdownNow();
        sidecars.close();
    }

    private SidecarProcesses.Sidecar startWithToken(String id) throws Exception {
        return sidecars.start(id, "client", SidecarProcesses.TIMING, ", token-file: '" + tokenFile + "'");
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
    }

    @Test
    public void aJobManagerWithTheTokenFileLeadsAndWritesAndOneWithoutIsRefused() throws Exception {
        SidecarProcesses.Sidecar s = startWithToken("jm1");
        Configuration c = conf(s);
        c.set(SidecarOptions.TOKEN_FILE, tokenFile.toString());
        try (HighAvailabilityServices h = new SidecarHaServicesFactory().createHAServices(c, io)) {
            LeaderElection e = h.getDispatcherLeaderElection();
            Contender contender = new Contender();
            // POST /candidacy and the publication of the address are writes: both need the token.
            e.startLeaderElection(contender);
            Object first = contender.events.poll(LONG.toMillis(), TimeUnit.MILLISECONDS);
            assertTrue("no grant within " + LONG + ": " + first + "\n" + s.logText(), first instanceof UUID);
            e.confirmLeadershipAsync((UUID) first, "pekko://jm1/dispatcher").get(LONG.toMillis(), TimeUnit.MILLISECONDS);
            e.close();
        }

        // The same write without the token, and with another token: refused, naming the key.
        long term = s.client().send("GET", "/leader", Collections.emptyMap(), null).json().path("term").asLong();
        Map<String, String> fenced = new HashMap<>();
        fenced.put(SidecarClient.TERM_HEADER, Long.toString(term));
        for (SidecarClient client :
                new SidecarClient[] {
                    new SidecarClient(s.url(), Duration.ofSeconds(5)),
                    new SidecarClient(s.url(), Duration.ofSeconds(5), token.substring(1) + "0")
                }) {
            SidecarClient.Response r = client.send("PUT", "/state/probe", fenced, "x".getBytes(StandardCharsets.UTF_8));
            assertEquals(r.toString(), 401, r.status);
            assertEquals(r.toString(), "unauthorized", r.error());
            assertTrue(r.toString(), r.message().contains(SidecarOptions.TOKEN_FILE.key()));
        }
        // Nothing was written; reads need no token.
        SidecarClient.Response read = s.client().send("GET", "/state/probe", Collections.emptyMap(), null);
        assertEquals(read.toString(), 404, read.status);
        assertFalse("the token is in the sidecar's log", s.logText().contains(token));
    }

    @Test
    public void aCandidacyWithoutTheTokenFailsWithTheKeyToSet() throws Exception {
        SidecarProcesses.Sidecar s = startWithToken("jm1");
        try {
            SidecarLeaderElectionDriver.create(s.client(), new RecordingListener("jm1"), new Leadership());
            fail("a candidacy without the token was accepted");
        } catch (SidecarConfigException e) {
            assertTrue(e.getMessage(), e.getMessage().contains(SidecarOptions.TOKEN_FILE.key()));
            assertTrue(e.getMessage(), e.getMessage().contains("http.token-file"));
        }
    }

    @Test
    public void anUnreadableTokenFileIsAConfigErrorNamingTheKeyNotTheContents() throws Exception {
        SidecarProcesses.Sidecar s = startWithToken("jm1");
        Configuration c = conf(s);
        Path missing = sidecars.dir.resolve("no-such-token");
        c.set(SidecarOptions.TOKEN_FILE, missing.toString());
        try {
            new SidecarHaServicesFactory().createHAServices(c, io).close();
            fail("a missing token file was accepted");
        } catch (IllegalConfigurationException e) {
            assertTrue(e.getMessage(), e.getMessage().contains(SidecarOptions.TOKEN_FILE.key()));
            assertTrue(e.getMessage(), e.getMessage().contains(missing.toString()));
        }
        Path spaced = sidecars.dir.resolve("spaced-token");
        Files.write(spaced, ("two words " + token).getBytes(StandardCharsets.UTF_8));
        c.set(SidecarOptions.TOKEN_FILE, spaced.toString());
        try {
            new SidecarHaServicesFactory().createHAServices(c, io).close();
            fail("a token with spaces was accepted");
        } catch (IllegalConfigurationException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("HTTP header"));
            assertFalse(e.getMessage(), e.getMessage().contains(token));
        }
    }
}
