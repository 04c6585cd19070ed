package harness

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"runtime"
	"slices"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/bench/loadgen"
	"github.com/vrouter/vrouter/bench/report"
)

// egressIPs are the gateways' egress IPs: loopback stand-ins for public
// addresses (127.0.0.0/8 is all local on Linux, so the daemons can bind
// them), one gateway each.
var egressIPs = []string{"127.0.0.2", "127.0.0.3"}

// scenDedicatedEgress: TCP throughput and connection rate from a container
// whose app has dedicated egress to servers on the host's 127.0.0.1,
// leaving through a gateway's egress IP, beside node egress (another app's
// container on the same worker, scenario 3's vrouter path) in the same
// run.
func (s *Suite) scenDedicatedEgress(ctx context.Context, sc *scope, out *report.Scenario) error {
	if err := s.needRoot(); err != nil {
		return err
	}
	if err := s.needTools("ip", "ss", "setpriv", "iperf3"); err != nil {
		return err
	}
	if err := s.needDedicatedEgress(ctx); err != nil {
		return err
	}
	cl, err := s.startGatewayCluster(ctx, sc, "vrb-de")
	if err != nil {
		return err
	}
	srv, err := startSrcServer()
	if err != nil {
		return err
	}
	sc.add("stop the source server", srv.Close)
	// The baseline: a container of an app without dedicated egress on the
	// same worker leaves through the worker itself.
	nsB, err := s.newNetns(ctx, sc, "e")
	if err != nil {
		return err
	}
	cB, err := s.attach(ctx, cl.worker, nsB, cl.pn, newID("ap"), "web")
	if err != nil {
		return err
	}
	if err := s.loopbackOut(ctx, nsB); err != nil {
		return err
	}
	gw, err := s.waitThroughGateway(ctx, cl, srv.Addr())
	if err != nil {
		return err
	}
	if src, err := seenFrom(nsB, srv.Addr(), 2*time.Second); err != nil || src != "127.0.0.1" {
		return fmt.Errorf("node egress baseline: the server saw %q (%v), want the node's 127.0.0.1", src, err)
	}
	s.rep.MTUs["vrouter port"] = cl.c.MTU
	ded := &path{name: "vrouter", mtu: cl.c.MTU, client: cl.ns, dst: "127.0.0.1", bind: "127.0.0.1",
		fwd: []int{cl.worker.worker(), gw.d.worker()}}
	node := &path{name: "vrouter node egress", mtu: cB.MTU, client: nsB, dst: "127.0.0.1", bind: "127.0.0.1",
		fwd: []int{cl.worker.worker()}}
	tcp := s.compare(ctx, sc, s.p.iperfRuns, s.measureTCP(1), ded, node)
	conn := s.compare(ctx, sc, s.p.loadRuns, s.measureConnRate, ded, node)

	tcpDetails := []string{"retransmits", "forwarder_cores", "endpoint_cores", "cpu_cores_per_gbit"}
	connDetails := []string{"p50_us", "p99_us", "failed", "forwarder_cores"}
	out.Rows = append(out.Rows,
		report.Row{Metric: "TCP throughput, 1 stream", Unit: "Gbit/s", Better: "higher", Chart: "throughput",
			Subject: tcp.figure(0, "gbps", tcpDetails...), Baseline: ptr(tcp.figure(1, "gbps", tcpDetails...))},
		report.Row{Metric: "TCP connections (connect, 1 B each way, close)", Unit: "conn/s", Better: "higher", Chart: "throughput",
			Subject: conn.figure(0, "conn_per_s", connDetails...), Baseline: ptr(conn.figure(1, "conn_per_s", connDetails...))},
		report.Row{Metric: "CPU per Gbit/s, 1 stream (forwarders + iperf3 ends)", Unit: "cores", Better: "lower",
			Subject: tcp.figure(0, "cpu_cores_per_gbit"), Baseline: ptr(tcp.figure(1, "cpu_cores_per_gbit"))},
		report.Row{Metric: "forwarder CPU, 1 stream", Unit: "cores", Better: "lower",
			Subject: tcp.figure(0, "forwarder_cores"), Baseline: ptr(tcp.figure(1, "forwarder_cores"))},
	)
	out.Notes = append(out.Notes,
		fmt.Sprintf("vrouter: three daemons as nobody in one cluster on loopback: a worker and two gateways (--egress-ip %s and %s, --egress-allow-loopback); the container's app has dedicated egress (vrouter egress enable), so its traffic goes worker → WireGuard → the active gateway, whose NAT connects from its egress IP to the servers on the host's 127.0.0.1", egressIPs[0], egressIPs[1]),
		fmt.Sprintf("the loopback server saw the container's connections come from %s (gateway %s) and the baseline's from 127.0.0.1", gw.ip, gw.d.name),
		"node egress: a container of another app (no dedicated egress) on the same worker, leaving through the worker's own NAT; comparable with scenario 3's vrouter column of its TCP throughput, connection and CPU rows (the same path, there a daemon alone rather than in a cluster)",
		"forwarder CPU: the worker and the active gateway for dedicated egress, the worker for node egress",
		fmt.Sprintf("connection rate: %d concurrent clients (bench/cmd/connload) against a one-byte server in the driver", s.p.connConc))
	if src, err := seenFrom(cl.ns, srv.Addr(), 2*time.Second); err != nil || src != gw.ip {
		out.Notes = append(out.Notes, fmt.Sprintf("after the runs the container left as %q (%v), not %s: the active gateway changed during the measurements", src, err, gw.ip))
	}
	return nil
}

// needDedicatedEgress skips when this build has no gateways.
func (s *Suite) needDedicatedEgress(ctx context.Context) error {
	flags := s.runFlags(ctx)
	if !strings.Contains(flags, "--egress-ip") || !strings.Contains(flags, "--egress-allow-loopback") {
		return skipf("dedicated egress not built (vrouter run has no --egress-ip or --egress-allow-loopback)")
	}
	if _, err := s.run(ctx, cmdTimeout, []string{s.bin, "egress", "--help"}, nil); err != nil {
		return skipf("dedicated egress not built (no vrouter egress: %v)", err)
	}
	return nil
}

// gateway is a gateway daemon of a gwCluster.
type gateway struct {
	d     *daemon
	ip    string   // its egress IP
	extra []string // its flags of run after the suite's own, for a restart
}

// gwCluster is a worker and two gateways in one cluster, and a container
// on the worker whose app has dedicated egress through them.
type gwCluster struct {
	worker  *daemon
	gws     []*gateway
	pn, app string
	ns      *netns // the container
	c       container
}

func (cl *gwCluster) gatewayOf(ip string) *gateway {
	for _, g := range cl.gws {
		if g.ip == ip {
			return g
		}
	}
	return nil
}

func (cl *gwCluster) daemons() []*daemon {
	ds := []*daemon{cl.worker}
	for _, g := range cl.gws {
		ds = append(ds, g.d)
	}
	return ds
}

// egressApp is the part of `egress enable --json` (and of an element of
// `egress show --json`) the suite reads.
type egressApp struct {
	App string `json:"app"`
	IPs []struct {
		IP      string `json:"ip"`
		Gateway string `json:"gateway"`
		Health  string `json:"health"`
		Active  bool   `json:"active"`
		Primary bool   `json:"primary"`
	} `json:"ips"`
}

// startGatewayCluster starts the worker (the seed) and the gateways, each
// with the flags extra of run, enables dedicated egress for a new app and
// attaches a container of it to the worker, its loopback routed out
// (loopbackOut).
func (s *Suite) startGatewayCluster(ctx context.Context, sc *scope, tag string, extra ...string) (*gwCluster, error) {
	key, err := s.clusterKey(ctx)
	if err != nil {
		return nil, err
	}
	cl := &gwCluster{pn: newID("pn"), app: newID("ap")}
	// Every node may NAT to loopback: the worker for node egress, the
	// gateways for dedicated egress.
	cl.worker, err = s.startDaemon(ctx, sc, tag+"-w", append([]string{"--cluster-key-file", key, "--egress-allow-loopback"}, extra...)...)
	if err != nil {
		return nil, err
	}
	for i, ip := range egressIPs {
		flags := append([]string{"--cluster-key-file", key, "--join", fmt.Sprintf("127.0.0.1:%d", cl.worker.gossip),
			"--egress-allow-loopback", "--egress-ip", ip}, extra...)
		d, err := s.startDaemon(ctx, sc, fmt.Sprintf("%s-g%d", tag, i+1), flags...)
		if err != nil {
			return nil, err
		}
		cl.gws = append(cl.gws, &gateway{d: d, ip: ip, extra: flags})
	}
	if err := s.waitAlive(ctx, cl.daemons()...); err != nil {
		return nil, err
	}
	var a egressApp
	if err := s.cli(ctx, cl.worker, &a, "egress", "enable", "--app", cl.app, "--json"); err != nil {
		return nil, err
	}
	if err := checkAssignment(a, cl); err != nil {
		return nil, err
	}
	if cl.ns, err = s.newNetns(ctx, sc, "d"); err != nil {
		return nil, err
	}
	if cl.c, err = s.attach(ctx, cl.worker, cl.ns, cl.pn, cl.app, "web"); err != nil {
		return nil, err
	}
	if err := s.loopbackOut(ctx, cl.ns); err != nil {
		return nil, err
	}
	return cl, nil
}

// checkAssignment checks that enable gave the app one IP on each gateway.
func checkAssignment(a egressApp, cl *gwCluster) error {
	var got []string
	for _, ip := range a.IPs {
		if g := cl.gatewayOf(ip.IP); g == nil || g.d.name != ip.Gateway {
			return fmt.Errorf("egress enable: %s on %s is not one of the suite's gateways", ip.IP, ip.Gateway)
		}
		got = append(got, ip.IP)
	}
	slices.Sort(got)
	if !slices.Equal(got, egressIPs) {
		return fmt.Errorf("egress enable gave %v, want %v", got, egressIPs)
	}
	return nil
}

// waitAlive waits until every daemon sees every other alive.
func (s *Suite) waitAlive(ctx context.Context, ds ...*daemon) error {
	return waitFor(ctx, 30*time.Second, "cluster nodes alive", func() error {
		for _, d := range ds {
			var ps []peer
			if err := s.cli(ctx, d, &ps, "peers", "--json"); err != nil {
				return err
			}
			alive := 0
			for _, p := range ps {
				if !p.Self && p.State == "alive" {
					alive++
				}
			}
			if alive != len(ds)-1 {
				return fmt.Errorf("%s: %d of %d peers alive", d.name, alive, len(ds)-1)
			}
		}
		return nil
	})
}

// egressShow returns the worker's view of the app's dedicated egress.
func (s *Suite) egressShow(ctx context.Context, cl *gwCluster) (egressApp, error) {
	var as []egressApp
	if err := s.cli(ctx, cl.worker, &as, "egress", "show", "--app", cl.app, "--json"); err != nil {
		return egressApp{}, err
	}
	if len(as) != 1 {
		return egressApp{}, fmt.Errorf("egress show --app %s: %d apps", cl.app, len(as))
	}
	return as[0], nil
}

// waitHealthy waits until the worker sees both of the app's IPs healthy.
func (s *Suite) waitHealthy(ctx context.Context, cl *gwCluster) error {
	return waitFor(ctx, 30*time.Second, "both egress IPs healthy on the worker", func() error {
		a, err := s.egressShow(ctx, cl)
		if err != nil {
			return err
		}
		for _, ip := range a.IPs {
			if ip.Health != "healthy" {
				return fmt.Errorf("%s on %s is %s", ip.IP, ip.Gateway, ip.Health)
			}
		}
		return nil
	})
}

// waitThroughGateway waits until the container's connections reach the
// source server from one of the gateways' egress IPs (the WireGuard
// sessions to the gateways come up on the first packets) and returns that
// gateway.
func (s *Suite) waitThroughGateway(ctx context.Context, cl *gwCluster, addr string) (*gateway, error) {
	var gw *gateway
	err := waitFor(ctx, 30*time.Second, "the container's traffic through a gateway", func() error {
		src, err := seenFrom(cl.ns, addr, time.Second)
		if err != nil {
			return err
		}
		if gw = cl.gatewayOf(src); gw == nil {
			return permanent(fmt.Errorf("the server saw %s, not a gateway's egress IP %v", src, egressIPs))
		}
		return nil
	})
	return gw, err
}

// srcServer tells every TCP connection the address it came from, as one
// line ("127.0.0.2\n"), then echoes what it receives: the scenarios see
// through which gateway a container's connection left, and keep one
// connection open across a drain. It owns its accept goroutine and one
// goroutine per connection; Close stops them all.
type srcServer struct{ *loadgen.Server }

// srcConnLife bounds every connection of a srcServer.
const srcConnLife = 2 * time.Minute

// startSrcServer listens on 127.0.0.1, where the gateways' NAT connects
// to.
func startSrcServer() (*srcServer, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("source server: %w", err)
	}
	return &srcServer{loadgen.Serve(ln, func(c net.Conn) {
		_ = c.SetDeadline(time.Now().Add(srcConnLife))
		host, _, _ := net.SplitHostPort(c.RemoteAddr().String())
		if _, err := io.WriteString(c, host+"\n"); err != nil {
			return
		}
		_, _ = io.Copy(c, c)
	})}, nil
}

// Addr is IP:PORT of the server.
func (s *srcServer) Addr() string { return s.Server.Addr().String() }

// maxSrcLine bounds the line a srcServer sends.
const maxSrcLine = 64

// readSrcLine reads the source server's line, without its newline.
func readSrcLine(r io.Reader) (string, error) {
	var line []byte
	var b [1]byte
	for len(line) < maxSrcLine {
		if _, err := io.ReadFull(r, b[:]); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return "", fmt.Errorf("read source line: %w", err)
		}
		if b[0] == '\n' {
			if len(line) == 0 {
				return "", errors.New("read source line: empty")
			}
			return string(line), nil
		}
		line = append(line, b[0])
	}
	return "", fmt.Errorf("read source line: longer than %d bytes", maxSrcLine)
}

// dialSource connects to a srcServer at addr and returns the connection
// and the source address the server saw, all within timeout. It opens its
// socket in the namespace of the calling thread.
func dialSource(addr string, timeout time.Duration) (net.Conn, string, error) {
	start := time.Now()
	d := net.Dialer{Timeout: timeout}
	c, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, "", err
	}
	_ = c.SetDeadline(start.Add(timeout))
	src, err := readSrcLine(c)
	if err != nil {
		c.Close()
		return nil, "", err
	}
	_ = c.SetDeadline(time.Time{})
	return c, src, nil
}

// seenFrom connects from ns to the srcServer at addr and returns the
// source address the server saw.
func seenFrom(ns *netns, addr string, timeout time.Duration) (string, error) {
	var src string
	var err error
	if nerr := inNetns(ns, func() {
		var c net.Conn
		if c, src, err = dialSource(addr, timeout); err == nil {
			c.Close()
		}
	}); nerr != nil {
		return "", nerr
	}
	return src, err
}

// inNetns runs fn on an OS thread that has entered ns, so that the sockets
// fn opens belong to ns (a socket keeps its namespace wherever it is used
// afterwards). The thread goes back to the pool only once it is home again;
// should that fail, the goroutine exits locked and the runtime destroys
// the thread rather than reuse it in a foreign namespace. A nil ns is the
// host's namespace: fn just runs.
func inNetns(ns *netns, fn func()) error {
	if ns == nil {
		fn()
		return nil
	}
	target, err := os.Open(ns.path)
	if err != nil {
		return fmt.Errorf("enter netns %s: %w", ns.name, err)
	}
	defer target.Close()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		home, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("own netns: %w", err)
			return
		}
		defer home.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread() // still home
			errc <- fmt.Errorf("enter netns %s: %w", ns.name, err)
			return
		}
		fn()
		if err := unix.Setns(int(home.Fd()), unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("leave netns %s: %w", ns.name, err)
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	return <-errc
}
