package harness

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/vrouter/vrouter/bench/report"
)

// vethMTU is the baseline's MTU for the same-node scenario: vrouter's port
// MTU, so both carry the same packets.
const (
	vethMTU = 1390
	wgMTU   = 1420 // wireguard-go's default: a 1500 underlay minus 80 bytes of WireGuard over IPv6
)

// scenSameNode: two containers of one PN on one daemon against two
// namespaces joined by a kernel veth pair.
func (s *Suite) scenSameNode(ctx context.Context, sc *scope, out *report.Scenario) error {
	if err := s.needRoot(); err != nil {
		return err
	}
	if err := s.needTools("ip", "ss", "setpriv", "iperf3", "sockperf"); err != nil {
		return err
	}
	vr := s.vrouterSameNode(ctx, sc)
	veth := s.vethPath(ctx, sc, vethMTU)
	if vr.mtu > 0 {
		s.rep.MTUs["vrouter port"] = vr.mtu
	}
	s.rep.MTUs["veth baseline"] = vethMTU
	out.Rows = s.pnRows(ctx, sc, vr, veth, "≥ 0.5× veth")
	out.Notes = append(out.Notes,
		fmt.Sprintf("vrouter: one daemon as nobody, two namespaces attached with vrouter attach (TUN with IFF_VNET_HDR, port MTU %d); veth: two namespaces joined by a veth pair, MTU %d", vr.mtu, vethMTU),
		"CPU per Gbit/s counts the forwarder processes (the daemon; none for veth) plus both iperf3 ends, from /proc and iperf3's own report")
	return nil
}

// scenCrossNode: two daemons on loopback, one container each, against
// standalone wireguard-go over kernel TUNs in two namespaces joined by a
// veth.
func (s *Suite) scenCrossNode(ctx context.Context, sc *scope, out *report.Scenario) error {
	if err := s.needRoot(); err != nil {
		return err
	}
	if err := s.needTools("ip", "ss", "setpriv", "iperf3", "sockperf"); err != nil {
		return err
	}
	vr := s.vrouterCrossNode(ctx, sc)
	wg := s.wireguardPath(ctx, sc)
	s.rep.MTUs["wireguard-go baseline"] = wgMTU
	out.Rows = s.pnRows(ctx, sc, vr, wg, "≥ 1.0× wireguard-go")
	out.Notes = append(out.Notes,
		fmt.Sprintf("vrouter: two daemons as nobody on loopback (gossip and WireGuard on 127.0.0.1), container MTU %d (VXLAN inside WireGuard on the wire); wireguard-go: one process per namespace, kernel TUN MTU %d, veth underlay MTU 1500", vr.mtu, wgMTU),
		"the two MTUs differ by design: vrouter's port MTU leaves room for VXLAN (50 B) and WireGuard (60 B) in 1500; wireguard-go's 1420 only for WireGuard")
	return nil
}

// pnRows measures the PN figures on vr and base, alternating run by run.
func (s *Suite) pnRows(ctx context.Context, sc *scope, vr, base *path, target string) []report.Row {
	p := s.p
	tcp1 := s.compare(ctx, sc, p.iperfRuns, s.measureTCP(1), vr, base)
	tcp4 := s.compare(ctx, sc, p.iperfRuns, s.measureTCP(4), vr, base)
	udp := s.compare(ctx, sc, p.iperfRuns, s.measureUDP64, vr, base)
	rr := s.compare(ctx, sc, p.rrRuns, s.measureRR, vr, base)
	tcpDetails := []string{"retransmits", "forwarder_cores", "endpoint_cores", "cpu_cores_per_gbit"}
	fwdBase := tcp1.figure(1, "forwarder_cores")
	if base.usable() && len(base.fwd) == 0 {
		fwdBase = report.Figure{Name: base.name, MTU: base.mtu, Skipped: "kernel path, no forwarder process"}
	}
	return []report.Row{
		{Metric: "TCP throughput, 1 stream", Unit: "Gbit/s", Better: "higher", Chart: "throughput",
			Subject: tcp1.figure(0, "gbps", tcpDetails...), Baseline: ptr(tcp1.figure(1, "gbps", tcpDetails...)), Target: target},
		{Metric: "TCP throughput, 4 streams", Unit: "Gbit/s", Better: "higher", Chart: "throughput",
			Subject: tcp4.figure(0, "gbps", tcpDetails...), Baseline: ptr(tcp4.figure(1, "gbps", tcpDetails...)), Target: target},
		{Metric: "UDP 64 B datagrams received", Unit: "kpps", Better: "higher", Chart: "throughput",
			Subject: udp.figure(0, "kpps", "loss_percent", "sent_kpps", "forwarder_cores"), Baseline: ptr(udp.figure(1, "kpps", "loss_percent", "sent_kpps", "forwarder_cores"))},
		{Metric: "TCP request/response RTT p50", Unit: "µs", Better: "lower", Chart: "latency",
			Subject: rr.figure(0, "p50_us", "avg_us"), Baseline: ptr(rr.figure(1, "p50_us", "avg_us"))},
		{Metric: "TCP request/response RTT p99", Unit: "µs", Better: "lower", Chart: "latency",
			Subject: rr.figure(0, "p99_us"), Baseline: ptr(rr.figure(1, "p99_us"))},
		{Metric: "CPU per Gbit/s, 1 stream (forwarders + iperf3 ends)", Unit: "cores", Better: "lower",
			Subject: tcp1.figure(0, "cpu_cores_per_gbit"), Baseline: ptr(tcp1.figure(1, "cpu_cores_per_gbit"))},
		{Metric: "forwarder CPU, 1 stream", Unit: "cores", Better: "lower",
			Subject: tcp1.figure(0, "forwarder_cores"), Baseline: &fwdBase},
	}
}

// vrouterSameNode: one daemon, containers a (client) and b (server) in one
// PN.
func (s *Suite) vrouterSameNode(ctx context.Context, sc *scope) *path {
	d, err := s.startDaemon(ctx, sc, "vrb-same")
	if err != nil {
		return failedPath("vrouter", 0, err)
	}
	a, b, err := s.twoContainers(ctx, sc, d, d)
	if err != nil {
		return failedPath("vrouter", 0, err)
	}
	return &path{name: "vrouter", mtu: b.c.MTU, client: a.ns, server: b.ns, dst: b.c.IP, fwd: []int{d.worker()}}
}

// vrouterCrossNode: two daemons in one cluster, a container on each.
func (s *Suite) vrouterCrossNode(ctx context.Context, sc *scope) *path {
	fail := func(err error) *path { return failedPath("vrouter", 0, err) }
	key, err := s.clusterKey(ctx)
	if err != nil {
		return fail(err)
	}
	n1, err := s.startDaemon(ctx, sc, "vrb-n1", "--cluster-key-file", key)
	if err != nil {
		return fail(err)
	}
	n2, err := s.startDaemon(ctx, sc, "vrb-n2", "--cluster-key-file", key, "--join", fmt.Sprintf("127.0.0.1:%d", n1.gossip))
	if err != nil {
		return fail(err)
	}
	if err := s.waitCluster(ctx, n1, n2); err != nil {
		return fail(err)
	}
	a, b, err := s.twoContainers(ctx, sc, n1, n2)
	if err != nil {
		return fail(err)
	}
	if err := s.waitContainer(ctx, n1, b.c.Network, b.c.IP); err != nil {
		return fail(err)
	}
	if err := s.waitContainer(ctx, n2, a.c.Network, a.c.IP); err != nil {
		return fail(err)
	}
	return &path{name: "vrouter", mtu: b.c.MTU, client: a.ns, server: b.ns, dst: b.c.IP, fwd: []int{n1.worker(), n2.worker()}}
}

type attached struct {
	ns *netns
	c  container
}

// twoContainers attaches a namespace to da and one to db, same PN and app.
func (s *Suite) twoContainers(ctx context.Context, sc *scope, da, db *daemon) (attached, attached, error) {
	pn, app := newID("pn"), newID("ap")
	var out [2]attached
	for i, d := range []*daemon{da, db} {
		ns, err := s.newNetns(ctx, sc, "c")
		if err != nil {
			return out[0], out[1], err
		}
		c, err := s.attach(ctx, d, ns, pn, app, "web")
		if err != nil {
			return out[0], out[1], err
		}
		c.Network = pn
		out[i] = attached{ns, c}
	}
	return out[0], out[1], nil
}

// vethPath: two namespaces joined by a veth pair.
func (s *Suite) vethPath(ctx context.Context, sc *scope, mtu int) *path {
	fail := func(err error) *path { return failedPath("veth", mtu, err) }
	a, err := s.newNetns(ctx, sc, "va")
	if err != nil {
		return fail(err)
	}
	b, err := s.newNetns(ctx, sc, "vb")
	if err != nil {
		return fail(err)
	}
	if err := s.veth(ctx, a, b, "10.240.0.1/22", "10.240.0.2/22", mtu); err != nil {
		return fail(err)
	}
	return &path{name: "veth", mtu: mtu, client: a, server: b, dst: "10.240.0.2"}
}

// wireguardPath: wireguard-go (built from the module in go.mod) in two
// namespaces, each with a kernel TUN, peered over a veth underlay in
// 198.51.100.0/24 (TEST-NET-2, only inside these namespaces).
func (s *Suite) wireguardPath(ctx context.Context, sc *scope) *path {
	fail := func(err error) *path { return failedPath("wireguard-go", wgMTU, err) }
	if err := s.needTools("wg"); err != nil {
		return fail(err)
	}
	if _, err := os.Stat(s.cfg.WireGuardGo); err != nil {
		return fail(fmt.Errorf("wireguard-go binary (make bench builds it from go.mod's module): %w", err))
	}
	var ns [2]*netns
	for i := range ns {
		n, err := s.newNetns(ctx, sc, "wg")
		if err != nil {
			return fail(err)
		}
		ns[i] = n
	}
	underlay := [2]string{"198.51.100.1", "198.51.100.2"}
	inner := [2]string{"10.240.0.1", "10.240.0.2"}
	if err := s.veth(ctx, ns[0], ns[1], underlay[0]+"/24", underlay[1]+"/24", 1500); err != nil {
		return fail(err)
	}
	var priv, pub [2]string
	var pids []int
	for i := range ns {
		k, err := s.run(ctx, cmdTimeout, []string{"wg", "genkey"}, nil)
		if err != nil {
			return fail(err)
		}
		priv[i] = strings.TrimSpace(string(k))
		p, err := s.run(ctx, cmdTimeout, []string{"wg", "pubkey"}, stdinString(priv[i]))
		if err != nil {
			return fail(err)
		}
		pub[i] = strings.TrimSpace(string(p))
	}
	for i, n := range ns {
		// The UAPI socket (/var/run/wireguard/NAME.sock) is not per
		// namespace: the interface names must be unique on the host.
		dev := fmt.Sprintf("vbwg%s%d", s.runID, i)
		p, err := s.startProc(sc, "wireguard-go "+dev, n.cmd(s.cfg.WireGuardGo, "-f", dev), nil)
		if err != nil {
			return fail(err)
		}
		sock := "/var/run/wireguard/" + dev + ".sock"
		sc.add("remove "+sock, func() error {
			if err := os.Remove(sock); err != nil && !os.IsNotExist(err) {
				return err
			}
			return nil
		})
		pids = append(pids, p.pid())
		if err := waitFor(ctx, cmdTimeout, dev+" UAPI socket", func() error {
			if p.exited() {
				return permanent(fmt.Errorf("wireguard-go exited: %v: %s", p.err, lastLines(p.out.String(), 3)))
			}
			_, err := os.Stat(sock)
			return err
		}); err != nil {
			return fail(err)
		}
		keyFile := filepath.Join(s.work, dev+".key")
		if err := os.WriteFile(keyFile, []byte(priv[i]+"\n"), 0o600); err != nil {
			return fail(err)
		}
		o := 1 - i
		if _, err := s.run(ctx, cmdTimeout, n.cmd("wg", "set", dev, "private-key", keyFile, "listen-port", "51820",
			"peer", pub[o], "allowed-ips", inner[o]+"/32", "endpoint", underlay[o]+":51820"), nil); err != nil {
			return fail(err)
		}
		if err := s.ip(ctx, n, "addr", "add", inner[i]+"/24", "dev", dev); err != nil {
			return fail(err)
		}
		if err := s.ip(ctx, n, "link", "set", dev, "mtu", fmt.Sprint(wgMTU), "up"); err != nil {
			return fail(err)
		}
	}
	return &path{name: "wireguard-go", mtu: wgMTU, client: ns[0], server: ns[1], dst: inner[1], fwd: pids}
}
