package dev.hasidecar.flink;

import org.apache.flink.runtime.leaderelection.LeaderElectionDriver;
import org.apache.flink.runtime.leaderelection.LeaderElectionDriverFactory;

/**
 * Creates the one election driver of a JobManager. Flink calls it when the first contender
 * registers, so a TaskManager (which builds the same HA services but never registers a
 * contender) never opens a candidacy.
 */
final class SidecarLeaderElectionDriverFactory implements LeaderElectionDriverFactory {

    private final SidecarClient client;
    private final Leadership leadership;

    SidecarLeaderElectionDriverFactory(SidecarClient client, Leadership leadership) {
        this.client = client;
        this.leadership = leadership;
    }

    @Override
    public LeaderElectionDriver create(LeaderElectionDriver.Listener listener) throws Exception {
        return SidecarLeaderElectionDriver.create(client, listener, leadership);
    }
}
