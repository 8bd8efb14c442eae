package dev.hasidecar.flink;

import org.apache.flink.api.common.JobStatus;
import org.apache.flink.runtime.checkpoint.CheckpointIDCounter;
import org.apache.flink.util.FlinkRuntimeException;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.nio.charset.StandardCharsets;
import java.util.Optional;
import java.util.concurrent.CompletableFuture;

/**
 * A job's checkpoint id counter: decimal text at {@code jobs/<job>/checkpoint_id_counter}, changed by
 * compare-and-set fenced by this JobManager's term (a deposed leader cannot move it), absent
 * meaning {@link CheckpointIDCounter#INITIAL_CHECKPOINT_ID}.
 */
final class SidecarCheckpointIDCounter implements CheckpointIDCounter {

    private static final Logger LOG = LoggerFactory.getLogger(SidecarCheckpointIDCounter.class);

    private final SidecarState state;
    private final String key;
    private final Leadership leadership;
    private volatile long lastKnown = INITIAL_CHECKPOINT_ID;

    SidecarCheckpointIDCounter(SidecarState state, String key, Leadership leadership) {
        this.state = state;
        this.key = key;
        this.leadership = leadership;
    }

    @Override
    public void start() {}

    @Override
    public CompletableFuture<Void> shutdown(JobStatus jobStatus) {
        if (!jobStatus.isGloballyTerminalState()) {
            return CompletableFuture.completedFuture(null);
        }
        try {
            state.delete(key, SidecarState.ANY, leadership.fencingTerm(key));
            LOG.info("Removed the checkpoint id counter {} (job {})", key, jobStatus);
            return CompletableFuture.completedFuture(null);
        } catch (Exception e) {
            CompletableFuture<Void> f = new CompletableFuture<>();
            f.completeExceptionally(e);
            return f;
        }
    }

    @Override
    public long getAndIncrement() throws Exception {
        return update(current -> current + 1);
    }

    @Override
    public long get() {
        try {
            return read().value;
        } catch (Exception e) {
            throw new FlinkRuntimeException("cannot read the checkpoint id counter " + key + " from " + state.client().describe(), e);
        }
    }

    @Override
    public void setCount(long newId) throws Exception {
        update(current -> newId);
    }

    private static final class Current {
        final long value;
        final long version;

        Current(long value, long version) {
            this.value = value;
            this.version = version;
        }
    }

    private Current read() throws Exception {
        Optional<SidecarState.Versioned> v = state.get(key);
        if (!v.isPresent()) {
            return new Current(INITIAL_CHECKPOINT_ID, SidecarState.ABSENT);
        }
        long value = decode(v.get().value);
        lastKnown = value;
        return new Current(value, v.get().version);
    }

    /**
     * Decimal text, as this plugin writes it; or the 4-byte big-endian int of Curator's
     * SharedCount, as Flink's own ZooKeeper HA left it before the cluster moved to the sidecar
     * (decimal text is ASCII digits, which a count below 808,464,432 never is in all four bytes).
     */
    private long decode(byte[] bytes) {
        String text = new String(bytes, StandardCharsets.UTF_8).trim();
        if (!text.isEmpty() && text.chars().allMatch(Character::isDigit)) {
            return Long.parseLong(text);
        }
        if (bytes.length == 4) {
            return java.nio.ByteBuffer.wrap(bytes).getInt();
        }
        throw new IllegalStateException(
                "the checkpoint id counter " + key + " holds " + bytes.length + " bytes that are neither decimal text nor Flink's 4-byte counter");
    }

    private interface Step {
        long next(long current);
    }

    /** Compare-and-set until it holds; returns the value before. */
    private long update(Step step) throws Exception {
        while (true) {
            long term = leadership.fencingTerm(key);
            Current c = read();
            long next = step.next(c.value);
            try {
                state.put(key, Long.toString(next).getBytes(StandardCharsets.UTF_8), c.version, term);
                lastKnown = next;
                return c.value;
            } catch (SidecarState.Conflict e) {
                LOG.debug("Checkpoint id counter {} changed concurrently; retrying", key);
            }
        }
    }

    @Override
    public String toString() {
        return "SidecarCheckpointIDCounter{" + key + ", last known " + lastKnown + "}";
    }
}
