package metrics

import (
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/vrouter/vrouter/router"
)

// collector turns one Snapshot per scrape into const metrics: nothing is
// registered per container, so a detached container's series simply stop,
// and the data path keeps only the counters it has anyway.
type collector struct {
	src Source
	now func() time.Time
}

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("vrouter_"+name, help, labels, nil)
}

var (
	ctrLabels = []string{"network", "app", "type", "container"}

	dContainerPackets   = desc("container_packets_total", "Packets of a container: direction sent (read from its port) or received (written to it).", append(ctrLabels, "direction")...)
	dContainerBytes     = desc("container_bytes_total", "IP bytes of a container: direction sent or received.", append(ctrLabels, "direction")...)
	dContainerForwarded = desc("container_forwarded_packets_total", "Packets a container sent that were forwarded: path same_node (a port of this node), other_node (encapsulated for another node) or stack (DNS, egress).", append(ctrLabels, "path")...)
	dContainerFwdBytes  = desc("container_forwarded_bytes_total", "IP bytes a container sent that were forwarded to path same_node or other_node.", append(ctrLabels, "path")...)
	dContainerDrops     = desc("container_drops_total", "Packets a container sent that were dropped, by reason.", append(ctrLabels, "reason")...)
	dContainerBudgetFDs = desc("container_egress_budget_fds", "Host sockets the container's node egress flows hold of the node's egress budget now.", ctrLabels...)
	dContainerBudgetMem = desc("container_egress_budget_memory_bytes", "Flow buffer memory (worst case) the container's node egress flows hold of the node's egress budget now.", ctrLabels...)

	dNetworkPackets   = desc("network_packets_total", "Packets of the containers of a network on this node (detached ones included): direction sent or received.", "network", "direction")
	dNetworkBytes     = desc("network_bytes_total", "IP bytes of the containers of a network on this node: direction sent or received.", "network", "direction")
	dNetworkForwarded = desc("network_forwarded_packets_total", "Packets of a network's containers forwarded, by path (same_node, other_node, stack).", "network", "path")
	dNetworkFwdBytes  = desc("network_forwarded_bytes_total", "IP bytes of a network's containers forwarded, by path (same_node, other_node).", "network", "path")
	dNetworkDrops     = desc("network_drops_total", "Packets of a network's containers dropped, by reason.", "network", "reason")

	dDrops         = desc("drops_total", "Packets dropped by the router, by reason (every reason of vrouter status, the overlay's inbound drops included).", "reason")
	dRouterEvents  = desc("router_events_total", "Other router counters of vrouter status (icmp_sent, read_errors, encapsulated, gso_split, …).", "event")
	dRouterBytes   = desc("router_bytes_total", "Byte counters of the router from vrouter status, without the _bytes suffix (rx, forwarded, encapsulated, from_stack).", "counter")
	dPorts         = desc("ports_attached", "Container ports attached to this node now.")
	dNetworks      = desc("networks", "Private networks with containers on this node now.")
	dAlarms        = desc("alarms", "Conditions an operator must fix, as listed in vrouter status alarms (a peer left out of the overlay, a lost VNI claim).")
	dAttachSeconds = desc("attach_duration_seconds", "Time from receiving an attach request to the attached port (claims included).")

	dPeerUp        = desc("overlay_peer_up", "1 when the peer node is alive in the cluster and configured on the WireGuard device.", "peer")
	dPeerRxBytes   = desc("overlay_peer_receive_bytes_total", "WireGuard bytes received from the peer node.", "peer")
	dPeerTxBytes   = desc("overlay_peer_transmit_bytes_total", "WireGuard bytes sent to the peer node.", "peer")
	dPeerHandshake = desc("overlay_peer_last_handshake_age_seconds", "Seconds since the last WireGuard handshake with the peer node (absent before the first one).", "peer")

	dDNSQueries  = desc("dns_queries_total", "DNS queries by kind: private (answered from the private zone), forwarded (upstream exchanges started), cache_hit.", "kind")
	dDNSRcodes   = desc("dns_responses_total", "DNS responses sent to containers, by rcode.", "rcode")
	dDNSEvents   = desc("dns_events_total", "Other resolver counters: upstream_error, tcp_retry, flood (refused by the in-flight bounds), flood_network (of those, refused for the network's share), truncated, tcp_refused (DNS-over-TCP connections refused by their bound), rate_dropped and rate_refused (queries over their network's share of the query rate while other networks asked too: dropped, answered REFUSED).", "event")
	dDNSSlots    = desc("dns_forward_slots_in_use", "Upstream exchanges in flight now.")
	dDNSSlotsMax = desc("dns_forward_slots", "Upstream exchanges allowed in flight (node-wide bound).")
	dDNSLatency  = desc("dns_upstream_duration_seconds", "Duration of each exchange with an upstream resolver (failed ones included).")

	dEgressOpened  = desc("egress_flows_opened_total", "Flows opened through the node's own address (node egress), by proto (tcp: dials, udp, icmp: echo requests).", "proto")
	dEgressActive  = desc("egress_flows_active", "Node egress flows open now, by proto.", "proto")
	dEgressRefused = desc("egress_flows_refused_total", "Node egress refused, by proto and reason (refused: by the destination, failed: dial error or timeout, error: no ping socket or send error).", "proto", "reason")
	dEgressDenied  = desc("egress_denied_total", "Node egress packets to refused destinations (loopback, link-local, the node's own addresses).")
	dEgressLimited = desc("egress_limited_total", "Node egress SYNs, new UDP flows and pings refused by a limit.")
	dPingReplies   = desc("egress_ping_replies_total", "Echo replies node egress delivered to containers.")
	dDenyAddrs     = desc("egress_deny_addresses", "The node's own addresses node egress refuses as destinations.")
	dDenyRefreshes = desc("egress_deny_refreshes_total", "Times a change of the host's addresses refreshed the node's own addresses.")

	dBudgetFDs     = desc("egress_budget_fds", "Host sockets node egress holds now (all networks and gateway NATs).")
	dBudgetMaxFDs  = desc("egress_budget_max_fds", "Host sockets node egress may hold (--egress-max-fds).")
	dBudgetMem     = desc("egress_budget_memory_bytes", "Flow buffer memory node egress holds now, the worst case of the flows open.")
	dBudgetMaxMem  = desc("egress_budget_max_memory_bytes", "Flow buffer memory node egress may hold (--egress-max-memory).")
	dBudgetNets    = desc("egress_budget_networks", "Networks and gateway NATs holding something of the egress budget now.")
	dBudgetRefused = desc("egress_budget_refused_total", "New node egress flows refused by the node's budget, by reason (node_fds, node_memory, network_share, container_share, container_max).", "reason")
	dNetBudgetFDs  = desc("network_egress_budget_fds", "Host sockets a network's node egress (or a gateway NAT, network=\"gateway VNI\") holds of the budget now.", "network")
	dNetBudgetMem  = desc("network_egress_budget_memory_bytes", "Flow buffer memory a network's node egress (or a gateway NAT) holds of the budget now.", "network")

	dRestarts        = desc("worker_restarts_total", "Forwarding workers the supervisor started again after one died.")
	dCrashLoop       = desc("worker_crash_loop", "1 when workers keep dying soon after they start.")
	dBackoff         = desc("worker_restart_backoff_seconds", "The wait before this worker's start (a crash loop).")
	dUpgrades        = desc("upgrades_total", "Upgrades (vrouter upgrade) that handed over to a new binary.")
	dUpgradeAttempts = desc("upgrade_attempts_total", "Upgrades finished, successful or not.")
	dRestoreFailed   = desc("restore_failed_total", "Handed-over ports this worker could not rebuild.")
	dPortsDropped    = desc("ports_dropped", "Ports the supervisor closed because their fd did not come back or their handover failed.")

	dedLabels      = []string{"app", "egress_ip", "gateway"}
	dDedActive     = desc("egress_gateway_active", "1 when new flows of the app leave through this egress IP now.", dedLabels...)
	dDedHealthy    = desc("egress_gateway_healthy", "1 when the gateway of this egress IP is alive, passes its probe and answers overlay probes.", dedLabels...)
	dDedDraining   = desc("egress_gateway_draining", "1 when the gateway of this egress IP is drained for maintenance.", dedLabels...)
	dDedFlows      = desc("egress_dedicated_flows_total", "Flows of the app's dedicated egress opened through this egress IP by the NATs of this node (its gateway).", dedLabels...)
	dFailovers     = desc("egress_failovers_total", "Times the active gateway of the app's dedicated egress changed from one gateway to another.", "app")
	dLastFailover  = desc("egress_last_failover_timestamp_seconds", "Unix time of the app's last failover (absent before the first).", "app")
	dMembers       = desc("cluster_members", "Nodes of the cluster by state (alive, suspect, dead, left), this node included.", "state")
	dGossip        = desc("cluster_gossip_messages_total", "Record messages received through gossip, by result (ok, bad_version, malformed).", "result")
	dRecordsMerged = desc("cluster_records_merged_total", "Records received, by result (applied, duplicate, rejected; refused by the identity checks: stale, bad_signature, unknown_signer, bad_claim).", "result")
	dRecords       = desc("cluster_records", "Live records of the replicated store, by kind.", "kind")
	dTombstones    = desc("cluster_tombstones", "Deleted records kept until they are collected.")
	dConflicts     = desc("cluster_claim_conflicts_total", "Claims (addresses, numbers, identifiers) this node lost to another node.")
	dQueued        = desc("cluster_broadcasts_queued", "Record broadcasts waiting in the gossip queue.")
	dFlowSlots     = desc("flow_log_table_slots", "Flows the flow log can track at once.")
	dFlowLive      = desc("flow_log_flows", "Flows tracked now.")
	dFlowCreated   = desc("flow_log_flows_tracked_total", "Flows the flow log tracked.")
	dFlowDropped   = desc("flow_log_flows_dropped_total", "New flows not tracked because the flow table was full around their slot.")
	dFlowRecords   = desc("flow_log_records_total", "Flow records written.")
	dFlowErrors    = desc("flow_log_write_errors_total", "Flow records lost to write errors.")
	dFlowRotations = desc("flow_log_rotations_total", "Times the flow log file was rotated.")
	dMetaErrors    = desc("cluster_meta_errors_total", "Peer metadata that failed to decode.")
	dMetaRefused   = desc("cluster_meta_refused_total", "Peer metadata refused by the identity checks, by reason (unsigned, key_changed, stale).", "reason")
	dGossipWarns   = desc("cluster_gossip_warnings_total", "Warnings and errors of memberlist (each logged at most every few seconds per kind).")
	dGossipUndec   = desc("cluster_gossip_undecryptable_total", "Gossip packets and streams that failed to decrypt (no cluster key, or another one).")
	dGossipSockErr = desc("cluster_gossip_socket_errors_total", "Failed reads of the gossip UDP socket and failed accepts on its TCP listener.")
)

var allDescs = []*prometheus.Desc{
	dContainerPackets, dContainerBytes, dContainerForwarded, dContainerFwdBytes, dContainerDrops,
	dContainerBudgetFDs, dContainerBudgetMem,
	dNetworkPackets, dNetworkBytes, dNetworkForwarded, dNetworkFwdBytes, dNetworkDrops,
	dDrops, dRouterEvents, dRouterBytes, dPorts, dNetworks, dAlarms, dAttachSeconds,
	dPeerUp, dPeerRxBytes, dPeerTxBytes, dPeerHandshake,
	dDNSQueries, dDNSRcodes, dDNSEvents, dDNSSlots, dDNSSlotsMax, dDNSLatency,
	dEgressOpened, dEgressActive, dEgressRefused, dEgressDenied, dEgressLimited,
	dPingReplies, dDenyAddrs, dDenyRefreshes,
	dBudgetFDs, dBudgetMaxFDs, dBudgetMem, dBudgetMaxMem, dBudgetNets, dBudgetRefused, dNetBudgetFDs, dNetBudgetMem,
	dRestarts, dCrashLoop, dBackoff, dUpgrades, dUpgradeAttempts, dRestoreFailed, dPortsDropped,
	dDedActive, dDedHealthy, dDedDraining, dDedFlows, dFailovers, dLastFailover,
	dMembers, dGossip, dRecordsMerged, dRecords, dTombstones, dConflicts, dQueued, dMetaErrors, dMetaRefused,
	dGossipWarns, dGossipUndec, dGossipSockErr,
	dFlowSlots, dFlowLive, dFlowCreated, dFlowDropped, dFlowRecords, dFlowErrors, dFlowRotations,
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allDescs {
		ch <- d
	}
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v uint64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	s := c.src.Snapshot()
	now := c.now()
	reasons := router.DropReasons()

	for _, k := range s.Containers {
		l := []string{k.Network, k.App, k.Type, k.ID}
		traffic(ch, &k.Counters, reasons, l,
			dContainerPackets, dContainerBytes, dContainerForwarded, dContainerFwdBytes, dContainerDrops)
		gauge(ch, dContainerBudgetFDs, float64(k.EgressFDs), l...)
		gauge(ch, dContainerBudgetMem, float64(k.EgressMemory), l...)
	}
	for _, n := range s.Networks {
		traffic(ch, &n.Counters, reasons, []string{n.ID},
			dNetworkPackets, dNetworkBytes, dNetworkForwarded, dNetworkFwdBytes, dNetworkDrops)
	}
	for _, r := range reasons {
		counter(ch, dDrops, s.Drops[r], r)
	}
	for ev, v := range s.Router {
		if name, ok := strings.CutSuffix(ev, "_bytes"); ok {
			counter(ch, dRouterBytes, v, name)
		} else {
			counter(ch, dRouterEvents, v, ev)
		}
	}
	gauge(ch, dPorts, float64(s.PortsAttached))
	gauge(ch, dNetworks, float64(s.NetworksLocal))
	gauge(ch, dAlarms, float64(s.Alarms))
	ch <- prometheus.MustNewConstHistogram(dAttachSeconds, s.AttachLatency.Count, s.AttachLatency.Sum, s.AttachLatency.Buckets)

	for _, p := range s.Peers {
		gauge(ch, dPeerUp, b2f(p.Up), p.Name)
		counter(ch, dPeerRxBytes, p.RxBytes, p.Name)
		counter(ch, dPeerTxBytes, p.TxBytes, p.Name)
		if !p.LastHandshake.IsZero() {
			gauge(ch, dPeerHandshake, max(0, now.Sub(p.LastHandshake).Seconds()), p.Name)
		}
	}

	d := &s.DNS
	counter(ch, dDNSQueries, d.Local, "private")
	counter(ch, dDNSQueries, d.Forwarded, "forwarded")
	counter(ch, dDNSQueries, d.CacheHits, "cache_hit")
	for rc, v := range d.Rcodes {
		counter(ch, dDNSRcodes, v, rc)
	}
	if _, ok := d.Rcodes["SERVFAIL"]; !ok {
		// Present from the start, so that a rate of SERVFAIL is defined
		// before the first one.
		counter(ch, dDNSRcodes, 0, "SERVFAIL")
	}
	counter(ch, dDNSEvents, d.UpstreamErrors, "upstream_error")
	counter(ch, dDNSEvents, d.TCPRetries, "tcp_retry")
	counter(ch, dDNSEvents, d.Flood, "flood")
	counter(ch, dDNSEvents, d.FloodNetwork, "flood_network")
	counter(ch, dDNSEvents, d.Truncated, "truncated")
	counter(ch, dDNSEvents, d.TCPRefused, "tcp_refused")
	counter(ch, dDNSEvents, d.RateDropped, "rate_dropped")
	counter(ch, dDNSEvents, d.RateRefused, "rate_refused")
	gauge(ch, dDNSSlots, float64(d.SlotsInUse))
	gauge(ch, dDNSSlotsMax, float64(d.Slots))
	ch <- prometheus.MustNewConstHistogram(dDNSLatency, d.UpstreamLatency.Count, d.UpstreamLatency.Sum, d.UpstreamLatency.Buckets)

	e := &s.Egress
	counter(ch, dEgressOpened, e.TCPDials, "tcp")
	counter(ch, dEgressOpened, e.UDPFlows, "udp")
	counter(ch, dEgressOpened, e.PingsSent, "icmp")
	gauge(ch, dEgressActive, float64(e.TCPActive), "tcp")
	gauge(ch, dEgressActive, float64(e.UDPActive), "udp")
	counter(ch, dEgressRefused, e.TCPRefused, "tcp", "refused")
	counter(ch, dEgressRefused, e.TCPFailed, "tcp", "failed")
	counter(ch, dEgressRefused, e.PingErrors, "icmp", "error")
	counter(ch, dEgressDenied, e.Denied)
	counter(ch, dEgressLimited, e.Limited)
	counter(ch, dPingReplies, e.PingReplies)
	gauge(ch, dDenyAddrs, float64(e.DenyAddrs))
	counter(ch, dDenyRefreshes, e.DenyRefreshes)

	b := &s.Budget
	gauge(ch, dBudgetFDs, float64(b.FDs))
	gauge(ch, dBudgetMaxFDs, float64(b.MaxFDs))
	gauge(ch, dBudgetMem, float64(b.Memory))
	gauge(ch, dBudgetMaxMem, float64(b.MaxMemory))
	gauge(ch, dBudgetNets, float64(b.Networks))
	// Every reason is in the map from the start (0), so that a rate of
	// refusals is defined before the first one.
	for r, v := range b.Refused {
		counter(ch, dBudgetRefused, v, r)
	}
	for _, t := range b.Tenants {
		gauge(ch, dNetBudgetFDs, float64(t.FDs), t.Network)
		gauge(ch, dNetBudgetMem, float64(t.Memory), t.Network)
	}
	if w := s.Worker; w != nil {
		counter(ch, dRestarts, uint64(w.Restarts))
		gauge(ch, dCrashLoop, b2f(w.CrashLoop))
		gauge(ch, dBackoff, w.BackoffSeconds)
		counter(ch, dUpgrades, uint64(w.Upgrades))
		counter(ch, dUpgradeAttempts, uint64(w.UpgradeAttempts))
		counter(ch, dRestoreFailed, w.RestoreFailed)
		gauge(ch, dPortsDropped, float64(w.PortsDropped))
	}

	for _, g := range s.Gateway {
		l := []string{g.App, g.EgressIP, g.Gateway}
		gauge(ch, dDedActive, b2f(g.Active), l...)
		gauge(ch, dDedHealthy, b2f(g.Healthy), l...)
		gauge(ch, dDedDraining, b2f(g.Draining), l...)
		counter(ch, dDedFlows, g.Flows, l...)
	}
	for _, f := range s.Failovers {
		counter(ch, dFailovers, f.Total, f.App)
		if !f.Last.IsZero() {
			gauge(ch, dLastFailover, float64(f.Last.UnixNano())/1e9, f.App)
		}
	}

	cl := &s.Cluster
	for _, st := range []string{"alive", "suspect", "dead", "left"} {
		gauge(ch, dMembers, float64(cl.Members[st]), st)
	}
	for _, r := range []string{"ok", "bad_version", "malformed"} {
		counter(ch, dGossip, cl.Messages[r], r)
	}
	counter(ch, dRecordsMerged, cl.RecordsApplied, "applied")
	counter(ch, dRecordsMerged, cl.RecordsDuplicate, "duplicate")
	counter(ch, dRecordsMerged, cl.RecordsRejected, "rejected")
	for _, r := range []string{"stale", "bad_signature", "unknown_signer", "bad_claim"} {
		counter(ch, dRecordsMerged, cl.RecordsRefused[r], r)
	}
	for k, v := range cl.Records {
		gauge(ch, dRecords, float64(v), k)
	}
	gauge(ch, dTombstones, float64(cl.Tombstones))
	counter(ch, dConflicts, cl.ClaimConflicts)
	gauge(ch, dQueued, float64(cl.QueuedBroadcasts))
	counter(ch, dMetaErrors, cl.MetaErrors)
	for _, r := range []string{"unsigned", "key_changed", "stale"} {
		counter(ch, dMetaRefused, cl.MetaRefused[r], r)
	}
	counter(ch, dGossipWarns, cl.GossipWarnings)
	counter(ch, dGossipUndec, cl.GossipUndecryptable)
	counter(ch, dGossipSockErr, cl.GossipSocketErrors)

	if f := s.FlowLog; f != nil {
		gauge(ch, dFlowSlots, float64(f.Slots))
		gauge(ch, dFlowLive, float64(f.Live))
		counter(ch, dFlowCreated, f.Created)
		counter(ch, dFlowDropped, f.Dropped)
		counter(ch, dFlowRecords, f.Records)
		counter(ch, dFlowErrors, f.WriteErrors)
		counter(ch, dFlowRotations, f.Rotations)
	}
}

// traffic emits the counters of one container or network.
func traffic(ch chan<- prometheus.Metric, k *router.Counters, reasons, l []string, pkts, bytes, fwd, fwdBytes, drops *prometheus.Desc) {
	with := func(v string) []string { return append(l[:len(l):len(l)], v) }
	counter(ch, pkts, k.RxPackets, with("sent")...)
	counter(ch, pkts, k.TxPackets, with("received")...)
	counter(ch, bytes, k.RxBytes, with("sent")...)
	counter(ch, bytes, k.TxBytes, with("received")...)
	counter(ch, fwd, k.LocalPackets, with("same_node")...)
	counter(ch, fwd, k.OverlayPackets, with("other_node")...)
	counter(ch, fwd, k.StackPackets, with("stack")...)
	counter(ch, fwdBytes, k.LocalBytes, with("same_node")...)
	counter(ch, fwdBytes, k.OverlayBytes, with("other_node")...)
	for i, r := range reasons {
		counter(ch, drops, k.Drops[i], with(r)...)
	}
}
