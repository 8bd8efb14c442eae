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
 * <p>With {@code -Dsidecar.backend=zookeeper} the sidecars use the ZooKeeper plugin on a
 * standalone ZooKeeper of their own (Debian's {@code zookeeper} package), started per instance.
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
    /** The backend of every sidecar: {@code file} (default) or {@code zookeeper}. */
    final String backend = System.getProperty("sidecar.backend", "file");
    private Process zookeeper;
    private int zookeeperPort;

    SidecarProcesses() throws Exception {
        dir = Files.createTempDirectory("ha-sidecar-flink-test");
        switch (backend) {
            case "file":
                break;
            case "zookeeper":
                startZooKeeper();
                break;
            default:
                throw new IllegalArgumentException("sidecar.backend=" + backend + ": use file or zookeeper");
        }
    }

    /**
     * A standalone ZooKeeper from the Debian package's jars (as the Rust tests run it), on a
     * free port, with short session bounds (2 to 20 ticks of 200 ms).
     */
    private void startZooKeeper() throws Exception {
        Path jars = Paths.get("/usr/share/java");
        Path server = jars.resolve("zookeeper.jar");
        if (!Files.isRegularFile(server)) {
            throw new IllegalStateException("ZooKeeper is not installed (no " + server + "): install the Debian package zookeeper");
        }
        String cp = server.toString();
        if (Files.isRegularFile(jars.resolve("slf4j-simple.jar"))) {
            cp += ":" + jars.resolve("slf4j-simple.jar");
        }
        zookeeperPort = freePort();
        Path zk = dir.resolve("zookeeper");
        Files.createDirectories(zk.resolve("data"));
        String cfg =
                "tickTime=200\nminSessionTimeout=400\nmaxSessionTimeout=4000\ndataDir=data\n"
                        + "clientPort=" + zookeeperPort + "\nclientPortAddress=127.0.0.1\n"
                        + "4lw.commands.whitelist=*\nadmin.enableServer=false\nmaxClientCnxns=0\n"
                        + "forceSync=no\npreAllocSize=4096\n";
        Files.write(zk.resolve("zoo.cfg"), cfg.getBytes(StandardCharsets.UTF_8));
        zookeeper =
                new ProcessBuilder(
                                Paths.get(System.getProperty("java.home"), "bin", "java").toString(),
                                "-Xmx256m", "-XX:+UseSerialGC", "-XX:-UsePerfData", "-cp", cp,
                                "org.apache.zookeeper.server.ZooKeeperServerMain", "./zoo.cfg")
                        .directory(zk.toFile())
                        .redirectErrorStream(true)
                        .redirectOutput(zk.resolve("server.log").toFile())
                        .start();
        awaitTrue("ZooKeeper to serve", Duration.ofSeconds(60), () -> {
            if (!zookeeper.isAlive()) {
                throw new AssertionError("ZooKeeper exited during start; see " + zk.resolve("server.log"));
            }
            try (java.net.Socket sock = new java.net.Socket(InetAddress.getLoopbackAddress(), zookeeperPort)) {
                sock.setSoTimeout(1000); // a server still starting may accept and not answer
                sock.getOutputStream().write("ruok".getBytes(StandardCharsets.US_ASCII));
                return new String(sock.getInputStream().readAllBytes(), StandardCharsets.US_ASCII).equals("imok");
            } catch (IOException e) {
                return false;
            }
        });
    }

    private String backendYaml() {
        if (backend.equals("zookeeper")) {
            return "plugin:\n"
                    + "  path: '" + plugin("ha_plugin_zookeeper") + "'\n"
                    + "  cache-dir: '" + repoRoot().resolve("target/test-compile-cache") + "'\n"
                    + "  settings: {root: /flink, cluster-id: test}\n"
                    + "capabilities:\n"
                    + "  zookeeper:\n"
                    + "    quorum: '127.0.0.1:" + zookeeperPort + "'\n"
                    + "    client: {session-timeout: 4s, connection-timeout: 5s, retry-wait: 200ms, max-retry-wait: 1s, max-retry-attempts: 10}\n";
        }
        return "plugin:\n"
                + "  path: '" + plugin("ha_plugin_file") + "'\n"
                + "  cache-dir: '" + repoRoot().resolve("target/test-compile-cache") + "'\n"
                + "  settings: {cluster-id: test, poll-interval-ms: 20}\n"
                + "capabilities: {filesystem: {dir: '" + dir.resolve("data") + "'}}\n";
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

    static Path plugin(String name) {
        Path p = repoRoot().resolve("plugins/target/wasm32-wasip2/release/" + name + ".wasm");
        if (!Files.isRegularFile(p)) {
            throw new IllegalStateException(
                    "the plugin " + name + " is not built at " + p + ": run (cd plugins && cargo build --release --locked)");
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
        return start(id, candidacy, timing, "");
    }

    /**
     * As {@link #start(String, String, String)}, with more keys of the {@code http:} section
     * (such as {@code , token-file: '/path'}).
     */
    Sidecar start(String id, String candidacy, String timing, String moreHttp) throws Exception {
        int port = freePort();
        String yaml =
                "member: {id: " + id + ", address: 'http://" + id + ".example:8081'}\n"
                        + "http: {listen: '127.0.0.1:" + port + "'" + moreHttp + "}\n"
                        + backendYaml()
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
        if (zookeeper != null) {
            zookeeper.destroyForcibly();
            zookeeper.waitFor();
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
