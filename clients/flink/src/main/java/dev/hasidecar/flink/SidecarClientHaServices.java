package dev.hasidecar.flink;

import org.apache.flink.runtime.highavailability.ClientHighAvailabilityServices;
import org.apache.flink.runtime.leaderretrieval.DefaultLeaderRetrievalService;
import org.apache.flink.runtime.leaderretrieval.LeaderRetrievalService;

/** What the CLI needs: the REST endpoint's leader, retrieved through the sidecar. */
final class SidecarClientHaServices implements ClientHighAvailabilityServices {

    private final SidecarClient client;

    SidecarClientHaServices(SidecarClient client) {
        this.client = client;
    }

    @Override
    public LeaderRetrievalService getClusterRestEndpointLeaderRetriever() {
        return new DefaultLeaderRetrievalService(
                SidecarLeaderRetrievalDriver.factory(client, Keys.REST_SERVER));
    }

    @Override
    public void close() {}
}
