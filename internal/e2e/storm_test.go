//go:build e2e

package e2e

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// The storm runs inside a container's namespace as this test binary again
// (TestMain hands over to runStorm when stormEnv is set): it needs many
// sockets at once, which no shell tool opens.
const stormEnv = "VROUTER_E2E_STORM"

// runStorm opens conns TCP connections to the sink, writing 4 MiB on each
// (the sink never reads), and sends one datagram to each of ports UDP
// ports from 20000 up; it prints what got through, then holds everything
// open until its stdin closes.
func runStorm(spec string) {
	var sink string
	var conns, ports int
	if _, err := fmt.Sscanf(spec, "%s %d %d", &sink, &conns, &ports); err != nil {
		fmt.Println("bad storm spec:", err)
		os.Exit(2)
	}
	host, _, _ := net.SplitHostPort(sink)
	var ok, refused, failed atomic.Int64
	var mu sync.Mutex
	var held []net.Conn
	var wg sync.WaitGroup
	for range conns {
		wg.Go(func() {
			// Long enough for SYNs that found 64 dials in progress (ignored:
			// the kernel retransmits after 1, 3, 7 s) on a loaded machine.
			c, err := net.DialTimeout("tcp4", sink, 30*time.Second)
			if err != nil {
				if strings.Contains(err.Error(), "refused") {
					refused.Add(1)
				} else {
					failed.Add(1)
				}
				return
			}
			ok.Add(1)
			mu.Lock()
			held = append(held, c)
			mu.Unlock()
			c.SetWriteDeadline(time.Now().Add(3 * time.Second))
			c.Write(make([]byte, 4<<20))
		})
	}
	for p := range ports {
		c, err := net.Dial("udp4", net.JoinHostPort(host, fmt.Sprint(20000+p)))
		if err != nil {
			continue
		}
		c.Write([]byte("x"))
		held = append(held, c)
	}
	wg.Wait()
	fmt.Printf("tcp_ok=%d tcp_refused=%d tcp_failed=%d\n", ok.Load(), refused.Load(), failed.Load())
	io.Copy(io.Discard, os.Stdin)
	for _, c := range held {
		c.Close()
	}
	os.Exit(0)
}

// neverReads is a TCP server on loopback that accepts every connection and
// reads nothing: a flow towards it fills every buffer on its way.
func neverReads(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	return ln.Addr().String()
}

// TestEgressStormSparesNeighbour: a container of one network floods node
// egress with connections to a sink that never reads and with datagrams to
// a thousand UDP ports; the node's budget refuses what is beyond its share
// (the container sees connection refused, not a hang), a container of
// another network keeps working egress meanwhile, and the daemon stays up
// with its fds within the budget.
func TestEgressStormSparesNeighbour(t *testing.T) {
	need(t)
	const maxFDs = 400
	in := startInternet(t)
	sink := neverReads(t)
	d := launchDaemon(t, newStateDir(t), "--egress-allow-loopback", "--egress-max-fds", fmt.Sprint(maxFDs), "--egress-max-memory", "512")
	d.waitRunning(t)
	nsA, nsB := newNetns(t), newNetns(t)
	d.attach(t, nsA, newID("pn"), newID("ap"), "flood")
	d.attach(t, nsB, newID("pn"), newID("ap"), "victim")
	loopbackOut(t, nsA)
	loopbackOut(t, nsB)

	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	storm := nsA.command(ctx, os.Args[0])
	storm.Env = append(os.Environ(), stormEnv+"="+fmt.Sprintf("%s %d %d", sink, 600, 1000))
	stdin, err := storm.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := storm.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	storm.Stderr = os.Stderr
	if err := storm.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		storm.Wait()
	}()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		t.Fatalf("storm: %v", err)
	}
	t.Logf("storm from the first container: %s", strings.TrimSpace(line))
	var ok, refused, failed int
	if _, err := fmt.Sscanf(line, "tcp_ok=%d tcp_refused=%d tcp_failed=%d", &ok, &refused, &failed); err != nil {
		t.Fatalf("storm said %q: %v", line, err)
	}
	if refused == 0 || ok == 0 || ok > maxFDs/2 {
		t.Fatalf("storm: %d connections, %d refused: want some through, at most half the budget, and the rest refused", ok, refused)
	}
	if failed != 0 {
		t.Fatalf("storm: %d connections hung or failed otherwise: a refusal must be a RST", failed)
	}

	// The other network's container, while the storm holds its flows.
	if line := tcpThrough(t, nsB, in, 256<<10); !strings.HasPrefix(line, "from 127.0.0.1 ") {
		t.Fatalf("the other container's TCP reached the outside as %q", line)
	}
	host, port, _ := net.SplitHostPort(in.udp)
	out, err := nsB.run(10*time.Second, "sh", "-c", fmt.Sprintf("echo ping | nc -u -w 2 %s %s", host, port))
	if err != nil || !strings.Contains(out, "from 127.0.0.1") {
		t.Fatalf("the other container's UDP during the storm: %v\n%s", err, out)
	}

	if d.exited() {
		t.Fatal("the daemon died in the storm")
	}
	var st struct {
		Budget struct {
			MaxFDs  int               `json:"max_fds"`
			FDs     int               `json:"fds"`
			Refused map[string]uint64 `json:"refused"`
		} `json:"budget"`
	}
	if err := json.Unmarshal([]byte(d.mustCLI(t, "status", "--json").stdout), &st); err != nil {
		t.Fatal(err)
	}
	var refusals uint64
	for _, n := range st.Budget.Refused {
		refusals += n
	}
	if st.Budget.MaxFDs != maxFDs || st.Budget.FDs > maxFDs || refusals == 0 {
		t.Fatalf("status budget %+v", st.Budget)
	}
	fds, err := os.ReadDir(fmt.Sprintf("/proc/%d/fd", d.pid()))
	if err != nil {
		t.Fatal(err)
	}
	// The budget plus what is outside it: ports, control, gossip,
	// WireGuard, DNS.
	if len(fds) > maxFDs+64 {
		t.Fatalf("the daemon holds %d fds, budget %d", len(fds), maxFDs)
	}
	rss := "?"
	if b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", d.pid())); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "VmRSS:"); ok {
				rss = strings.TrimSpace(v)
			}
		}
	}
	t.Logf("during the storm: daemon fds %d, RSS %s, budget %+v", len(fds), rss, st.Budget)
}
