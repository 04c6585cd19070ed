package harness

import (
	"context"
	"fmt"
	"strconv"
	"strings"

	"github.com/vrouter/vrouter/bench/report"
)

// MTUs of the slirp4netns and pasta baselines: vrouter's port MTU, and the
// largest both support (where they are at their best).
var egressMTUs = []int{vethMTU, 65520}

// scenNodeEgress: TCP throughput and connection rate from a container to a
// server on the host's loopback, through the node (vrouter run
// --egress-allow-loopback), against slirp4netns and pasta.
func (s *Suite) scenNodeEgress(ctx context.Context, sc *scope, out *report.Scenario) error {
	if err := s.needRoot(); err != nil {
		return err
	}
	if err := s.needTools("ip", "ss", "setpriv", "iperf3"); err != nil {
		return err
	}
	paths := []*path{s.vrouterEgress(ctx, sc)}
	for _, tool := range []string{"slirp4netns", "pasta"} {
		for _, mtu := range egressMTUs {
			paths = append(paths, s.userNetPath(ctx, sc, tool, mtu))
		}
	}
	s.rep.MTUs["slirp4netns/pasta baselines (low)"] = egressMTUs[0]
	s.rep.MTUs["slirp4netns/pasta baselines (high)"] = egressMTUs[1]
	tcp := s.compare(ctx, sc, s.p.iperfRuns, s.measureTCP(1), paths...)
	down := s.compare(ctx, sc, s.p.iperfRuns, s.measureTCPDown, paths...)
	conn := s.compare(ctx, sc, s.p.loadRuns, s.measureConnRate, paths...)
	tcpDetails := []string{"retransmits", "forwarder_cores", "endpoint_cores", "cpu_cores_per_gbit"}
	targets := map[string]string{"slirp4netns mtu 1390": "≥ 2×", "pasta mtu 65520": "≥ 1.0×"}
	for i := 1; i < len(paths); i++ {
		out.Rows = append(out.Rows, report.Row{
			Metric: "TCP throughput, 1 stream", Unit: "Gbit/s", Better: "higher", Chart: "throughput",
			Subject: tcp.figure(0, "gbps", tcpDetails...), Baseline: ptr(tcp.figure(i, "gbps", tcpDetails...)),
			Target: targets[paths[i].name],
		})
	}
	for i := 1; i < len(paths); i++ {
		out.Rows = append(out.Rows, report.Row{
			Metric: "TCP throughput, 1 stream, server to container (download)", Unit: "Gbit/s", Better: "higher", Chart: "throughput",
			Subject:  down.figure(0, "gbps", "forwarder_cores", "endpoint_cores", "cpu_cores_per_gbit"),
			Baseline: ptr(down.figure(i, "gbps", "forwarder_cores", "endpoint_cores", "cpu_cores_per_gbit")),
		})
	}
	for i := 1; i < len(paths); i++ {
		out.Rows = append(out.Rows, report.Row{
			Metric: "TCP connections (connect, 1 B each way, close)", Unit: "conn/s", Better: "higher", Chart: "throughput",
			Subject:  conn.figure(0, "conn_per_s", "p50_us", "p99_us", "failed", "forwarder_cores"),
			Baseline: ptr(conn.figure(i, "conn_per_s", "p50_us", "p99_us", "failed", "forwarder_cores")),
		})
	}
	for i := 1; i < len(paths); i++ {
		out.Rows = append(out.Rows, report.Row{
			Metric: "CPU per Gbit/s, 1 stream (forwarder + iperf3 ends)", Unit: "cores", Better: "lower",
			Subject: tcp.figure(0, "cpu_cores_per_gbit"), Baseline: ptr(tcp.figure(i, "cpu_cores_per_gbit")),
		})
	}
	out.Notes = append(out.Notes,
		"servers listen on the host's 127.0.0.1; vrouter's container reaches them at 127.0.0.1 (lo is down and without 127.0.0.1/8, so the address takes the default route into the TUN; route_localnet=1 lets the answers from 127.0.0.1 in), slirp4netns' and pasta's at their mapped gateway 10.0.2.2",
		"slirp4netns and pasta namespaces carry an nftables rule that drops everything leaving tap0 except to 10.0.2.2: nothing can reach the real network through them",
		fmt.Sprintf("connection rate: %d concurrent clients (bench/cmd/connload) against a one-byte server in the driver", s.p.connConc))
	return nil
}

// vrouterEgress: one daemon with --egress-allow-loopback and a container
// whose loopback is down. Without the flag in this build the path is
// skipped: node egress is not built yet.
func (s *Suite) vrouterEgress(ctx context.Context, sc *scope) *path {
	fail := func(err error) *path { return failedPath("vrouter", 0, err) }
	if !strings.Contains(s.runFlags(ctx), "--egress-allow-loopback") {
		return fail(skipf("node egress not built (vrouter run has no --egress-allow-loopback)"))
	}
	d, err := s.startDaemon(ctx, sc, "vrb-egress", "--egress-allow-loopback")
	if err != nil {
		return fail(err)
	}
	ns, err := s.newNetns(ctx, sc, "e")
	if err != nil {
		return fail(err)
	}
	c, err := s.attach(ctx, d, ns, newID("pn"), newID("ap"), "web")
	if err != nil {
		return fail(err)
	}
	if err := s.loopbackOut(ctx, ns); err != nil {
		return fail(err)
	}
	return &path{name: "vrouter", mtu: c.MTU, client: ns, dst: "127.0.0.1", bind: "127.0.0.1", fwd: []int{d.worker()}}
}

// loopbackOut makes 127.0.0.1 in the container ns (attached, its TUN is
// vr0) leave through the TUN, so that the container reaches servers on the
// host's loopback through vrouter.
func (s *Suite) loopbackOut(ctx context.Context, ns *netns) error {
	// Without its address on lo the namespace has no local route for
	// 127.0.0.0/8, so packets to 127.0.0.1 take the default route into
	// the TUN, to the node. (Setting lo down alone is not enough: the
	// local routes of an address stay while the address does.)
	if err := s.ip(ctx, ns, "link", "set", "lo", "down"); err != nil {
		return err
	}
	if err := s.ip(ctx, ns, "addr", "del", "127.0.0.1/8", "dev", "lo"); err != nil {
		return err
	}
	// And the answers come from 127.0.0.1 through vr0: without
	// route_localnet the container's kernel drops them as martians.
	if _, err := s.run(ctx, cmdTimeout, ns.cmd("sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=1", "net.ipv4.conf.vr0.route_localnet=1"), nil); err != nil {
		return err
	}
	return nil
}

// userNetPath: a namespace whose network is slirp4netns or pasta at mtu,
// guarded so that only the mapped gateway (the host's loopback) is
// reachable.
func (s *Suite) userNetPath(ctx context.Context, sc *scope, tool string, mtu int) *path {
	name := fmt.Sprintf("%s mtu %d", tool, mtu)
	fail := func(err error) *path { return failedPath(name, mtu, err) }
	if err := s.needTools(tool); err != nil {
		return fail(err)
	}
	// No guard, no baseline: never run these unguarded.
	if err := s.needTools("nft"); err != nil {
		return fail(skipf("nft is needed to guard the %s namespace: %v", tool, err))
	}
	ns, err := s.newNetns(ctx, sc, "u")
	if err != nil {
		return fail(err)
	}
	if err := s.guard(ctx, ns); err != nil {
		return fail(err)
	}
	var args []string
	switch tool {
	case "slirp4netns":
		// The host's 127.0.0.1 is 10.0.2.2 inside; no DNS forwarder.
		args = []string{"slirp4netns", "--configure", "--mtu=" + strconv.Itoa(mtu), "--disable-dns",
			"--netns-type=path", ns.path, "tap0"}
	case "pasta":
		// --runas 0:0: as root pasta would drop to nobody and could not
		// join the namespace. No port forwarding in either direction.
		args = []string{"pasta", "-f", "-q", "-4", "--runas", "0:0", "--config-net", "-I", "tap0",
			"-m", strconv.Itoa(mtu), "-a", "10.0.2.100", "-n", "24", "-g", "10.0.2.2",
			"-t", "none", "-u", "none", "-T", "none", "-U", "none", "--netns", ns.path}
	}
	p, err := s.startProc(sc, name, args, nil)
	if err != nil {
		return fail(err)
	}
	err = waitFor(ctx, cmdTimeout, name+" configured", func() error {
		if p.exited() {
			return permanent(fmt.Errorf("%s exited: %v: %s", tool, p.err, lastLines(p.out.String(), 3)))
		}
		out, err := s.run(ctx, cmdTimeout, []string{"ip", "-n", ns.name, "-4", "-o", "addr", "show", "dev", "tap0"}, nil)
		if err != nil {
			return err
		}
		if !strings.Contains(string(out), "10.0.2.100/24") {
			return fmt.Errorf("tap0 has no address yet")
		}
		return nil
	})
	if err != nil {
		return fail(err)
	}
	return &path{name: name, mtu: mtu, client: ns, dst: "10.0.2.2", bind: "127.0.0.1", fwd: []int{p.pid()}}
}
