package dev.hasidecar.flink;

import java.io.IOException;
import java.net.InetAddress;
import java.net.ServerSocket;
import java.net.URI;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.nio.file.Paths;
import java.time.Duration;
import java.util.ArrayList;
import java.util.Collections;
import java.util.Comparator;
import java.util.List;
import java.util.function.BooleanSupplier;
import java.util.stream.Stream;

/**
 * Real sidecar processes for the tests, on the embedded file backend in a temp dir: configs
 * written the way the Rust integration tests write them (short, safe timings), each process on
 * a free loopback port, killed when the test ends. A missing binary or plugin fails the test
 * loudly: nothing is mocked and nothing is skipped.
 *
 * <p>Binary: {@code HA_SIDECAR_BIN}, default {@code <repo>/target/release/ha-sidecar}; plugin:
 * {@code <repo>/plugins/target/wasm32-wasip2/release/ha_plugin_file.wasm}; the repository root
 * comes from the {@code repo.root} system property that {@code test.sh} sets.
 */
final class SidecarProcesses implements AutoCloseable {

    static final String TIMING =
            "timing: {lease: 2s, renew-deadline: 1500ms, retry-period: 400ms, resign-holdoff: 500ms}\n";

    final Path dir;
    private final List<Sidecar> started = new ArrayList<>();

    SidecarProcesses() throws IOException {
        dir = Files.createTempDirectory("ha-sidecar-flink-test");
    }

    static Path repoRoot() {
        String root = System.getProperty("repo.root");
        if (root == null) {
            throw new IllegalStateException("set -Drepo.root=<the repository> (clients/flink/test.sh does)");
        }
        return Paths.get(root).toAbsolutePath().normalize();
    }

    static Path binary() {
        String env = System.getenv("HA_SIDECAR_BIN");
        Path p = env != null ? Paths.get(env) : repoRoot().resolve("target/release/ha-sidecar");
        if (!Files.isExecutable(p)) {
            throw new IllegalStateException(
                    "no sidecar binary at " + p + ": build it with cargo build --release --locked --bin ha-sidecar (or set HA_SIDECAR_BIN)");
        }
        return p;
    }

    static Path filePlugin() {
        Path p = repoRoot().resolve("plugins/target/wasm32-wasip2/release/ha_plugin_file.wasm");
        if (!Files.isRegularFile(p)) {
            throw new IllegalStateException(
                    "the file plugin is not built at " + p + ": run (cd plugins && cargo build --release --locked)");
        }
        return p;
    }

    static int freePort() throws IOException {
        try (ServerSocket s = new ServerSocket(0, 1, InetAddress.getLoopbackAddress())) {
            return s.getLocalPort();
        }
    }

    /** A sidecar with {@code election.candidacy} set to {@code candidacy} (client, never, always). */
    Sidecar start(String id, String candidacy) throws Exception {
        return start(id, candidacy, TIMING);
    }

    /** As {@link #start(String, String)}, with a {@code timing:} line of its own. */
    Sidecar start(String id, String candidacy, String timing) throws Exception {
        int port = freePort();
        String yaml =
                "member: {id: " + id + ", address: 'http://" + id + ".example:8081'}\n"
                        + "http: {listen: '127.0.0.1:" + port + "'}\n"
                        + "plugin:\n"
                        + "  path: '" + filePlugin() + "'\n"
                        + "  cache-dir: '" + repoRoot().resolve("target/test-compile-cache") + "'\n"
                        + "  settings: {cluster-id: test, poll-interval-ms: 20}\n"
                        + "capabilities: {filesystem: {dir: '" + dir.resolve("data") + "'}}\n"
                        + timing
                        + "election: {candidacy: " + candidacy
                        + (candidacy.equals("client") ? ", candidacy-ttl: 3s" : "")
                        + "}\n";
        Path config = dir.resolve(id + ".yaml");
        Files.write(config, yaml.getBytes(StandardCharsets.UTF_8));
        Path log = dir.resolve(id + ".log");
        ProcessBuilder pb =
                new ProcessBuilder(binary().toString(), "run", config.toString())
                        .redirectErrorStream(true)
                        .redirectOutput(ProcessBuilder.Redirect.appendTo(log.toFile()));
        pb.environment().put("HA_SIDECAR_LOG", "info,ha_sidecar=debug");
        Sidecar s = new Sidecar(id, port, pb.start(), log);
        started.add(s);
        SidecarClient probe = s.client(Duration.ofSeconds(1));
        awaitTrue(id + " to serve HTTP", Duration.ofSeconds(30), () -> {
            if (!s.process.isAlive()) {
                throw new AssertionError(id + " exited during start:\n" + s.logText());
            }
            try {
                return probe.send("GET", "/healthz", Collections.emptyMap(), null).status < 500;
            } catch (Exception e) {
                return false;
            }
        });
        return s;
    }

    @Override
    public void close() throws Exception {
        for (Sidecar s : started) {
            s.kill();
        }
        if (Boolean.getBoolean("keep.dirs")) {
            System.err.println("kept " + dir);
            return;
        }
        try (Stream<Path> walk = Files.walk(dir)) {
            walk.sorted(Comparator.reverseOrder()).forEach(p -> p.toFile().delete());
        }
    }

    static void awaitTrue(String what, Duration timeout, BooleanSupplier f) throws InterruptedException {
        long deadline = System.nanoTime() + timeout.toNanos();
        while (!f.getAsBoolean()) {
            if (System.nanoTime() - deadline > 0) {
                throw new AssertionError("timed out after " + timeout.toMillis() + " ms waiting for " + what);
            }
            Thread.sleep(10);
        }
    }

    /** One sidecar process. */
    static final class Sidecar {
        final String id;
        final int port;
        final Process process;
        final Path log;

        Sidecar(String id, int port, Process process, Path log) {
            this.id = id;
            this.port = port;
            this.process = process;
            this.log = log;
        }

        URI url() {
            return URI.create("http://127.0.0.1:" + port);
        }

        SidecarClient client(Duration timeout) {
            return new SidecarClient(url(), timeout);
        }

        SidecarClient client() {
            return client(Duration.ofSeconds(5));
        }

        void signal(String sig) throws Exception {
            Process k = new ProcessBuilder("kill", "-" + sig, Long.toString(process.pid())).inheritIO().start();
            if (k.waitFor() != 0) {
                throw new AssertionError("kill -" + sig + " " + id + " failed");
            }
        }

        /** SIGSTOP: the process hangs, its sockets stay open. */
        void pause() throws Exception {
            signal("STOP");
        }

        void resume() throws Exception {
            signal("CONT");
        }

        void kill() throws Exception {
            if (process.isAlive()) {
                signal("CONT");
                process.destroyForcibly();
                process.waitFor();
            }
        }

        String logText() {
            try {
                return new String(Files.readAllBytes(log), StandardCharsets.UTF_8);
            } catch (IOException e) {
                return "(no log: " + e + ")";
            }
        }
    }
}
