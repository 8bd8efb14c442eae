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
 * A job's checkpoint id counter: decimal text at {@code flink/jobs/<job>/counter}, changed by
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
        String text = new String(v.get().value, StandardCharsets.UTF_8).trim();
        try {
            long value = Long.parseLong(text);
            lastKnown = value;
            return new Current(value, v.get().version);
        } catch (NumberFormatException e) {
            throw new IllegalStateException("the checkpoint id counter " + key + " holds " + text + ", not a number");
        }
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
