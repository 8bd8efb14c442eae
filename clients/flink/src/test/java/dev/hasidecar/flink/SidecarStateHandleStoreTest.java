package dev.hasidecar.flink;

import static org.junit.Assert.assertEquals;
import static org.junit.Assert.assertFalse;
import static org.junit.Assert.assertTrue;
import static org.junit.Assert.fail;

import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.core.fs.Path;
import org.apache.flink.runtime.leaderelection.LeadershipLostException;
import org.apache.flink.runtime.persistence.PossibleInconsistentStateException;
import org.apache.flink.runtime.persistence.StateHandleStore;
import org.apache.flink.runtime.persistence.filesystem.FileSystemStateStorageHelper;
import org.apache.flink.runtime.state.RetrievableStateHandle;

import org.junit.After;
import org.junit.Before;
import org.junit.Test;

import java.io.File;
import java.time.Duration;
import java.util.Arrays;
import java.util.Collections;
import java.util.HashSet;
import java.util.List;
import java.util.Set;
import java.util.UUID;
import java.util.stream.Collectors;

/**
 * The state handle store against a real sidecar: create-only, compare-and-set, not-exist,
 * fencing, a write whose outcome is unknown, removal and clearing, with Flink's own
 * FileSystemStateStorageHelper writing the files (the checks of Flink's
 * KubernetesStateHandleStoreTest that apply).
 */
public class SidecarStateHandleStoreTest {

    private static final Duration LONG = Duration.ofSeconds(20);

    private SidecarProcesses sidecars;
    private SidecarProcesses.Sidecar sidecar;
    private SidecarLeaderElectionDriver driver;
    private Leadership leadership;
    private File files;

    @Before
    public void setUp() throws Exception {
        sidecars = new SidecarProcesses();
        sidecar = sidecars.start("s1", "client");
        leadership = new Leadership();
        RecordingListener l = new RecordingListener("s1");
        driver = SidecarLeaderElectionDriver.create(sidecar.client(), l, leadership);
        l.next("grant", LONG);
        files = sidecars.dir.resolve("ha-files").toFile();
    }

    @After
    public void tearDown() throws Exception {
        driver.close();
        sidecars.close();
    }

    /** A grant held by hand with the real term, so a test's timing does not depend on renewals. */
    private Leadership pinned(long term) {
        Leadership l = new Leadership();
        l.grant(new Leadership.Grant(term, UUID.randomUUID(), System.nanoTime() + Duration.ofMinutes(5).toNanos()));
        return l;
    }

    private SidecarStateHandleStore<String> store(SidecarClient client, Leadership l) throws Exception {
        return new SidecarStateHandleStore<>(
                new SidecarState(client), "flink/test/", new FileSystemStateStorageHelper<>(new Path(files.toURI()), "state"), l);
    }

    private Set<String> fileNames() {
        String[] names = files.list();
        return names == null ? Collections.emptySet() : new HashSet<>(Arrays.asList(names));
    }

    @Test
    public void createOnlyReadCompareAndSetAndRemove() throws Exception {
        SidecarStateHandleStore<String> store = store(sidecar.client(), leadership);
        assertFalse(store.exists("a").isExisting());

        RetrievableStateHandle<String> h = store.addAndLock("a", "one");
        assertEquals("one", h.retrieveState());
        assertEquals("one", store.getAndLock("a").retrieveState());
        assertEquals(1, fileNames().size());
        SidecarResourceVersion v1 = store.exists("a");
        assertTrue(v1.isExisting());

        try {
            store.addAndLock("a", "again");
            fail("addAndLock over an existing key");
        } catch (StateHandleStore.AlreadyExistException e) {
            // the new state's file is discarded, the old one stays
        }
        assertEquals(1, fileNames().size());
        assertEquals("one", store.getAndLock("a").retrieveState());

        store.replace("a", v1, "two");
        assertEquals("two", store.getAndLock("a").retrieveState());
        assertEquals("the replaced state's file is discarded", 1, fileNames().size());
        SidecarResourceVersion v2 = store.exists("a");
        assertTrue(v2.compareTo(v1) > 0);

        try {
            store.replace("a", v1, "stale");
            fail("replace with a stale version");
        } catch (SidecarState.Conflict e) {
            // lost compare-and-set: nothing changes, the new file is discarded
        }
        assertEquals("two", store.getAndLock("a").retrieveState());
        assertEquals(1, fileNames().size());

        try {
            store.replace("missing", v2, "x");
            fail("replace of a missing key");
        } catch (StateHandleStore.NotExistException e) {
            // expected
        }
        try {
            store.getAndLock("missing");
            fail("getAndLock of a missing key");
        } catch (StateHandleStore.NotExistException e) {
            // expected
        }
        assertEquals(1, fileNames().size());

        store.addAndLock("b", "bee");
        List<Tuple2<RetrievableStateHandle<String>, String>> all = store.getAllAndLock();
        Set<String> got = all.stream().map(t -> t.f1 + "=" + retrieve(t.f0)).collect(Collectors.toSet());
        assertEquals(new HashSet<>(Arrays.asList("a=two", "b=bee")), got);
        assertEquals(new HashSet<>(Arrays.asList("a", "b")), new HashSet<>(store.getAllHandles()));

        assertTrue(store.releaseAndTryRemove("a"));
        assertFalse(store.exists("a").isExisting());
        assertEquals("removal discards the state", 1, fileNames().size());
        assertTrue("removing an absent key succeeds", store.releaseAndTryRemove("a"));

        store.clearEntries();
        assertTrue(store.getAllHandles().isEmpty());
        assertEquals("clearEntries removes pointers only", 1, fileNames().size());
    }

    @Test
    public void aNonLeaderWritesNothing() throws Exception {
        SidecarStateHandleStore<String> store = store(sidecar.client(), new Leadership());
        try {
            store.addAndLock("a", "x");
            fail("a write without a grant");
        } catch (LeadershipLostException e) {
            // definite: nothing sent
        }
        assertTrue(fileNames().isEmpty());
        assertFalse(store.exists("a").isExisting());
    }

    @Test
    public void aStaleTermIsFencedByTheSidecarAndTheFileDiscarded() throws Exception {
        long term = leadership.current().get().term;
        SidecarStateHandleStore<String> good = store(sidecar.client(), leadership);
        good.addAndLock("a", "one");
        SidecarResourceVersion v = good.exists("a");

        SidecarStateHandleStore<String> stale = store(sidecar.client(), pinned(term - 1));
        try {
            stale.addAndLock("b", "x");
            fail("a write under an older term");
        } catch (LeadershipLostException e) {
            assertTrue(e.getMessage(), e.getMessage().contains("fenced"));
        }
        try {
            stale.replace("a", v, "y");
            fail("a replace under an older term");
        } catch (LeadershipLostException e) {
            // expected
        }
        try {
            stale.releaseAndTryRemove("a");
            fail("a removal under an older term");
        } catch (LeadershipLostException e) {
            // expected
        }
        assertEquals("one", good.getAndLock("a").retrieveState());
        assertFalse(good.exists("b").isExisting());
        assertEquals("the fenced writes' files are discarded, the good one stays", 1, fileNames().size());
    }

    @Test
    public void aWriteToAHungSidecarIsPossiblyInconsistentAndDiscardsNothing() throws Exception {
        long term = leadership.current().get().term;
        SidecarStateHandleStore<String> store = store(sidecar.client(), leadership);
        store.addAndLock("a", "one");
        SidecarResourceVersion v = store.exists("a");
        assertEquals(1, fileNames().size());

        SidecarStateHandleStore<String> hung = store(sidecar.client(Duration.ofMillis(700)), pinned(term));
        sidecar.pause();
        try {
            try {
                hung.addAndLock("b", "bee");
                fail("an add with no answer");
            } catch (PossibleInconsistentStateException e) {
                // expected
            }
            assertEquals("an add of unknown outcome keeps its file", 2, fileNames().size());
            try {
                hung.replace("a", v, "two");
                fail("a replace with no answer");
            } catch (PossibleInconsistentStateException | java.io.IOException e) {
                // the read before the replace may already time out: then nothing was written
            }
        } finally {
            sidecar.resume();
        }
        Set<String> after = fileNames();
        assertTrue("no file was discarded: " + after, after.size() >= 2);
        assertEquals("the old state is still readable", "one", readAny(store, "a"));
        // The add may have been applied after the sidecar resumed: then its pointer names the
        // file that was kept, which is why nothing may be discarded.
        Thread.sleep(500);
        if (store.exists("b").isExisting()) {
            assertEquals("bee", store.getAndLock("b").retrieveState());
        }
    }

    private static String readAny(SidecarStateHandleStore<String> store, String name) throws Exception {
        long deadline = System.nanoTime() + LONG.toNanos();
        while (true) {
            try {
                return store.getAndLock(name).retrieveState();
            } catch (java.io.IOException e) {
                if (System.nanoTime() > deadline) {
                    throw e;
                }
                Thread.sleep(50);
            }
        }
    }

    private static String retrieve(RetrievableStateHandle<String> h) {
        try {
            return h.retrieveState();
        } catch (Exception e) {
            throw new AssertionError(e);
        }
    }
}
