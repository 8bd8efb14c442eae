package dev.hasidecar.flink;

import org.apache.flink.api.java.tuple.Tuple2;
import org.apache.flink.runtime.persistence.PossibleInconsistentStateException;
import org.apache.flink.runtime.persistence.RetrievableStateStorageHelper;
import org.apache.flink.runtime.persistence.StateHandleStore;
import org.apache.flink.runtime.state.RetrievableStateHandle;
import org.apache.flink.util.FlinkException;
import org.apache.flink.util.InstantiationUtil;

import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

import java.io.IOException;
import java.io.Serializable;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.Optional;

/**
 * Flink's {@link StateHandleStore} on the sidecar's state: the state itself goes to a file in
 * Flink's storage dir (written by the {@link RetrievableStateStorageHelper}), and only the
 * Java-serialized pointer to it (about 0.5 KB) goes to the sidecar under {@code prefix + name}.
 * Invariant: a pointer in the sidecar names an existing file.
 *
 * <p>Like Flink's Kubernetes store, the locks are no-ops: instead, every write is fenced by the
 * term this JobManager was granted, atomically in the sidecar, so only the leader changes the
 * store. A write whose outcome is unknown (503, timeout, connection lost after sending) throws
 * {@link PossibleInconsistentStateException} and discards nothing, because the pointer may now
 * name the file.
 */
final class SidecarStateHandleStore<T extends Serializable>
        implements StateHandleStore<T, SidecarResourceVersion> {

    private static final Logger LOG = LoggerFactory.getLogger(SidecarStateHandleStore.class);

    private final SidecarState state;
    private final String prefix;
    private final RetrievableStateStorageHelper<T> storage;
    private final Leadership leadership;

    SidecarStateHandleStore(
            SidecarState state,
            String prefix,
            RetrievableStateStorageHelper<T> storage,
            Leadership leadership) {
        if (!prefix.endsWith("/")) {
            throw new IllegalArgumentException("prefix must end with /: " + prefix);
        }
        this.state = state;
        this.prefix = prefix;
        this.storage = storage;
        this.leadership = leadership;
    }

    private String key(String name) {
        if (name.isEmpty() || name.contains("/")) {
            throw new IllegalArgumentException("a state name is one key segment, got " + name);
        }
        return prefix + name;
    }

    @Override
    public RetrievableStateHandle<T> addAndLock(String name, T value)
            throws PossibleInconsistentStateException, Exception {
        String key = key(name);
        long term = leadership.fencingTerm(key);
        RetrievableStateHandle<T> handle = storage.store(value);
        boolean discard = true;
        try {
            state.put(key, InstantiationUtil.serializeObject(handle), SidecarState.ABSENT, term);
            discard = false;
            return handle;
        } catch (SidecarState.Conflict e) {
            throw new AlreadyExistException(key + " already exists in " + state.client().describe(), e);
        } catch (PossibleInconsistentStateException e) {
            discard = false;
            throw e;
        } finally {
            if (discard) {
                discardQuietly(handle, key);
            }
        }
    }

    @Override
    public void replace(String name, SidecarResourceVersion version, T value)
            throws PossibleInconsistentStateException, Exception {
        String key = key(name);
        long term = leadership.fencingTerm(key);
        Optional<SidecarState.Versioned> old = state.get(key);
        if (!old.isPresent()) {
            throw new NotExistException(key + " does not exist in " + state.client().describe());
        }
        RetrievableStateHandle<T> handle = storage.store(value);
        boolean discardNew = true;
        try {
            state.put(key, InstantiationUtil.serializeObject(handle), version.getValue(), term);
            discardNew = false;
        } catch (SidecarState.Conflict e) {
            if (!e.current.isPresent()) {
                throw new NotExistException(key + " does not exist in " + state.client().describe(), e);
            }
            throw e;
        } catch (PossibleInconsistentStateException e) {
            discardNew = false;
            throw e;
        } finally {
            if (discardNew) {
                discardQuietly(handle, key);
            }
        }
        // The compare-and-set replaced exactly the version read, so that version's file is free.
        if (old.get().version == version.getValue()) {
            discardQuietly(deserialize(key, old.get().value), key);
        }
    }

    @Override
    public SidecarResourceVersion exists(String name) throws Exception {
        Optional<SidecarState.Versioned> v = state.get(key(name));
        return v.map(x -> SidecarResourceVersion.valueOf(x.version))
                .orElse(SidecarResourceVersion.notExisting());
    }

    @Override
    public RetrievableStateHandle<T> getAndLock(String name) throws Exception {
        String key = key(name);
        Optional<SidecarState.Versioned> v = state.get(key);
        if (!v.isPresent()) {
            throw new NotExistException(key + " does not exist in " + state.client().describe());
        }
        return deserialize(key, v.get().value);
    }

    @Override
    public List<Tuple2<RetrievableStateHandle<T>, String>> getAllAndLock() throws Exception {
        List<Tuple2<RetrievableStateHandle<T>, String>> all = new ArrayList<>();
        for (String name : getAllHandles()) {
            String key = key(name);
            Optional<SidecarState.Versioned> v = state.get(key);
            if (v.isPresent()) { // removed between the listing and the read: not there any more
                all.add(Tuple2.of(deserialize(key, v.get().value), name));
            }
        }
        return all;
    }

    @Override
    public Collection<String> getAllHandles() throws Exception {
        List<String> names = new ArrayList<>();
        for (String k : state.list(prefix)) {
            if (k.startsWith(prefix) && k.indexOf('/', prefix.length()) < 0) {
                names.add(k.substring(prefix.length()));
            }
        }
        return names;
    }

    @Override
    public boolean releaseAndTryRemove(String name) throws Exception {
        String key = key(name);
        long term = leadership.fencingTerm(key);
        Optional<SidecarState.Versioned> v = state.get(key);
        if (!v.isPresent()) {
            return true;
        }
        RetrievableStateHandle<T> handle = deserialize(key, v.get().value);
        try {
            state.delete(key, v.get().version, term);
        } catch (SidecarState.Conflict e) {
            LOG.info("Not removing {}: it changed while being removed ({})", key, e.getMessage());
            return false;
        }
        discardQuietly(handle, key);
        return true;
    }

    @Override
    public void clearEntries() throws Exception {
        for (String name : getAllHandles()) {
            String key = key(name);
            state.delete(key, SidecarState.ANY, leadership.fencingTerm(key));
        }
    }

    /** No-op: fencing by term replaces locks (as in Flink's Kubernetes store). */
    @Override
    public void release(String name) {}

    /** No-op, see {@link #release}. */
    @Override
    public void releaseAll() {}

    @SuppressWarnings("unchecked")
    private RetrievableStateHandle<T> deserialize(String key, byte[] bytes) throws FlinkException {
        try {
            return (RetrievableStateHandle<T>)
                    InstantiationUtil.deserializeObject(bytes, Thread.currentThread().getContextClassLoader());
        } catch (IOException | ClassNotFoundException | ClassCastException e) {
            throw new FlinkException(
                    "the pointer at " + key + " in " + state.client().describe() + " cannot be read as a state handle", e);
        }
    }

    private static void discardQuietly(RetrievableStateHandle<?> handle, String key) {
        try {
            handle.discardState();
        } catch (Exception e) {
            LOG.warn("Could not discard the state file of {}: {}", key, e.toString());
        }
    }

    @Override
    public String toString() {
        return "SidecarStateHandleStore{prefix=" + prefix + "}";
    }
}
