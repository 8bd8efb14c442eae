package dev.hasidecar.flink;

import org.apache.flink.runtime.leaderelection.LeaderElectionDriver;
import org.apache.flink.runtime.leaderelection.LeaderInformation;
import org.apache.flink.runtime.leaderelection.LeaderInformationRegister;

import java.time.Duration;
import java.util.ArrayList;
import java.util.List;
import java.util.UUID;
import java.util.concurrent.BlockingQueue;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.TimeUnit;

/**
 * Records what a driver tells Flink (as Flink's TestingLeaderElectionListener does) and checks
 * the rule Flink's election service enforces with checkState: grants and revokes strictly
 * alternate. A violation is recorded, and {@link #assertClean} fails the test with it.
 */
final class RecordingListener implements LeaderElectionDriver.Listener {

    /** One event: a grant (with its session), a revoke, or an error. */
    static final class Event {
        final String kind;
        final UUID session;
        final Throwable error;
        final long nanos = System.nanoTime();

        Event(String kind, UUID session, Throwable error) {
            this.kind = kind;
            this.session = session;
            this.error = error;
        }

        @Override
        public String toString() {
            return kind + (session != null ? " " + session : "") + (error != null ? " " + error : "");
        }
    }

    private final String name;
    final BlockingQueue<Event> events = new LinkedBlockingQueue<>();
    private final List<Event> all = new ArrayList<>();
    private final List<String> violations = new ArrayList<>();
    private boolean leader;

    RecordingListener(String name) {
        this.name = name;
    }

    @Override
    public synchronized void onGrantLeadership(UUID session) {
        if (leader) {
            violations.add(name + ": granted " + session + " while already leader");
        }
        leader = true;
        record(new Event("grant", session, null));
    }

    @Override
    public synchronized void onRevokeLeadership() {
        if (!leader) {
            violations.add(name + ": revoked while not leader");
        }
        leader = false;
        record(new Event("revoke", null, null));
    }

    @Override
    public void onLeaderInformationChange(String componentId, LeaderInformation info) {}

    @Override
    public void onLeaderInformationChange(LeaderInformationRegister register) {}

    @Override
    public synchronized void onError(Throwable t) {
        record(new Event("error", null, t));
    }

    private void record(Event e) {
        all.add(e);
        events.add(e);
    }

    synchronized boolean isLeader() {
        return leader;
    }

    synchronized List<Event> history() {
        return new ArrayList<>(all);
    }

    /** The next event, which must be of this kind. */
    Event next(String kind, Duration timeout) throws InterruptedException {
        Event e = events.poll(timeout.toMillis(), TimeUnit.MILLISECONDS);
        if (e == null) {
            throw new AssertionError(name + ": no " + kind + " within " + timeout.toMillis() + " ms; history " + history());
        }
        if (!e.kind.equals(kind)) {
            throw new AssertionError(name + ": expected " + kind + ", got " + e + "; history " + history());
        }
        return e;
    }

    /** No event for this long. */
    void assertQuiet(Duration d) throws InterruptedException {
        Event e = events.poll(d.toMillis(), TimeUnit.MILLISECONDS);
        if (e != null) {
            throw new AssertionError(name + ": unexpected " + e + "; history " + history());
        }
    }

    synchronized void assertClean() {
        if (!violations.isEmpty()) {
            throw new AssertionError("grant/revoke did not alternate: " + violations + "; history " + all);
        }
        for (Event e : all) {
            if (e.error != null) {
                throw new AssertionError(name + ": unexpected error " + e.error, e.error);
            }
        }
    }
}
