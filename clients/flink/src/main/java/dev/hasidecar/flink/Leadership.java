package dev.hasidecar.flink;

import org.apache.flink.runtime.leaderelection.LeadershipLostException;

import java.util.Optional;
import java.util.UUID;

/**
 * This JVM's leadership as its election driver last granted it: the term (the fencing token of
 * every write), the leader session id handed to Flink, and the instant on {@link
 * System#nanoTime()} until which it holds unless the sidecar extends it.
 *
 * <p>Shared by the election driver (the only writer) and the state stores and counters (which
 * fence their writes with it). Reads are one volatile load: {@link #isValid()} is what Flink's
 * {@code hasLeadership()} answers, under Flink's lock, so it must never block.
 */
final class Leadership {

    /** One grant: immutable, replaced whole. */
    static final class Grant {
        final long term;
        final UUID session;
        final long validUntilNanos;

        Grant(long term, UUID session, long validUntilNanos) {
            this.term = term;
            this.session = session;
            this.validUntilNanos = validUntilNanos;
        }

        boolean validAt(long nanos) {
            return nanos - validUntilNanos < 0;
        }

        @Override
        public String toString() {
            return "term " + Long.toUnsignedString(term) + ", session " + session;
        }
    }

    private volatile Grant grant;
    private volatile long lastTerm = -1;

    void grant(Grant g) {
        lastTerm = g.term;
        grant = g;
    }

    /** A later line of the same term moved the deadline. */
    void extend(long validUntilNanos) {
        Grant g = grant;
        if (g != null) {
            grant = new Grant(g.term, g.session, validUntilNanos);
        }
    }

    void revoke() {
        grant = null;
    }

    /** Granted and not past its validity deadline. */
    boolean isValid() {
        Grant g = grant;
        return g != null && g.validAt(System.nanoTime());
    }

    /** The grant in force, if it is still valid. */
    Optional<Grant> current() {
        Grant g = grant;
        return g != null && g.validAt(System.nanoTime()) ? Optional.of(g) : Optional.empty();
    }

    /** The term of the last grant of this JVM (valid or not), -1 if none. */
    long lastTerm() {
        return lastTerm;
    }

    /**
     * The term to fence a write with; a definite failure (nothing was sent, nothing may be
     * assumed written) when this JVM does not lead.
     */
    long fencingTerm(String what) throws LeadershipLostException {
        Optional<Grant> g = current();
        if (!g.isPresent()) {
            throw new LeadershipLostException(
                    "not writing " + what + ": this JobManager does not lead (no valid grant from its ha-sidecar); nothing was changed");
        }
        return g.get().term;
    }
}
