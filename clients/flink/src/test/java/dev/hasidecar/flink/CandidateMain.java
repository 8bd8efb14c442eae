package dev.hasidecar.flink;

import java.net.URI;
import java.time.Duration;

/**
 * A JobManager stand-in for the tests: a JVM that opens a candidacy through the plugin's driver
 * on the sidecar at {@code args[0]} and prints every grant ("granted <session>") and revoke
 * ("revoked") on stdout until it is killed.
 */
public final class CandidateMain {
    private CandidateMain() {}

    public static void main(String[] args) throws Exception {
        SidecarClient client = new SidecarClient(URI.create(args[0]), Duration.ofSeconds(5));
        RecordingListener listener = new RecordingListener("child");
        SidecarLeaderElectionDriver.create(client, listener, new Leadership());
        while (true) {
            RecordingListener.Event e = listener.events.take();
            System.out.println(e.kind.equals("grant") ? "granted " + e.session : e.toString());
            System.out.flush();
        }
    }
}
