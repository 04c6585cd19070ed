//go:build e2e

package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

// internet is the stand-in for the outside world: servers on 127.0.0.1
// that tell each client the source address they saw.
//
//	TCP: reads everything until EOF, then writes "from IP sha256 HEX\n"
//	UDP: answers each datagram with "from IP"
type internet struct {
	tcp, udp string // 127.0.0.1:PORT
	ln       net.Listener
	pc       net.PacketConn
	wg       sync.WaitGroup
}

func startInternet(t *testing.T) *internet {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	in := &internet{tcp: ln.Addr().String(), udp: pc.LocalAddr().String(), ln: ln, pc: pc}
	in.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			in.wg.Go(func() {
				defer c.Close()
				c.SetDeadline(time.Now().Add(30 * time.Second))
				h := sha256.New()
				io.Copy(h, c)
				ip, _, _ := net.SplitHostPort(c.RemoteAddr().String())
				fmt.Fprintf(c, "from %s sha256 %s\n", ip, hex.EncodeToString(h.Sum(nil)))
			})
		}
	})
	in.wg.Go(func() {
		buf := make([]byte, 2048)
		for {
			_, from, err := pc.ReadFrom(buf)
			if err != nil {
				return
			}
			ip, _, _ := net.SplitHostPort(from.String())
			pc.WriteTo([]byte("from "+ip+"\n"), from)
		}
	})
	t.Cleanup(func() {
		ln.Close()
		pc.Close()
		in.wg.Wait()
	})
	return in
}

// loopbackOut makes 127.0.0.0/8 leave ns through its TUN, which is how a
// container reaches the loopback "internet" of this tier: without an
// address on lo the kernel has no local route for 127/8, so the packets
// take the default route to the router, and route_localnet lets the
// replies from 127/8 in through vr0.
func loopbackOut(t *testing.T, ns *netns) {
	t.Helper()
	for _, cmd := range [][]string{
		{"ip", "addr", "flush", "dev", "lo"},
		{"ip", "link", "set", "lo", "down"},
		{"sysctl", "-qw", "net.ipv4.conf.all.route_localnet=1", "net.ipv4.conf.vr0.route_localnet=1"},
	} {
		if out, err := ns.run(5*time.Second, cmd...); err != nil {
			t.Fatalf("%v: %s", err, out)
		}
	}
}

// allowPing lets every group open unprivileged ICMP sockets (the daemon
// runs as nogroup) for the duration of the test.
func allowPing(t *testing.T) {
	t.Helper()
	const path = "/proc/sys/net/ipv4/ping_group_range"
	old, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("0 2147483647"), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := os.WriteFile(path, old, 0o644); err != nil {
			t.Errorf("restore %s: %v", path, err)
		}
	})
}

// tcpThrough sends size random bytes from ns to the internet's TCP server
// and returns the server's line ("from IP sha256 HEX") after checking the
// checksum.
func tcpThrough(t *testing.T, ns *netns, in *internet, size int) string {
	t.Helper()
	data := make([]byte, size)
	rand.Read(data)
	file := filepath.Join(t.TempDir(), "payload")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(in.tcp)
	start := time.Now()
	out, err := ns.run(60*time.Second, "sh", "-c", fmt.Sprintf("nc -N -w 10 %s %s < %s", host, port, file))
	if err != nil {
		t.Fatalf("TCP through egress: %v\n%s", err, out)
	}
	sum := sha256.Sum256(data)
	line := strings.TrimSpace(out)
	if !strings.HasSuffix(line, "sha256 "+hex.EncodeToString(sum[:])) {
		t.Fatalf("server answered %q, want the checksum of what was sent", line)
	}
	el := time.Since(start)
	t.Logf("TCP %d bytes through node egress in %v (%.0f Mbit/s), %s", size, el.Round(time.Millisecond), float64(size)*8/el.Seconds()/1e6, line[:strings.Index(line, " sha256")])
	return line
}

// TestNodeEgress: a container reaches the (loopback) outside world through
// its node: TCP with checksum, UDP, ping; the outside sees the node's
// address; a refused port is refused at once in the container; without
// --egress-allow-loopback loopback is refused.
func TestNodeEgress(t *testing.T) {
	need(t)
	allowPing(t)
	in := startInternet(t)
	d := launchDaemon(t, newStateDir(t), "--egress-allow-loopback")
	d.waitRunning(t)
	ns := newNetns(t)
	d.attach(t, ns, newID("pn"), newID("ap"), "web")
	loopbackOut(t, ns)

	if line := tcpThrough(t, ns, in, 8<<20); !strings.HasPrefix(line, "from 127.0.0.1 ") {
		t.Fatalf("the outside saw %q, want the node's address 127.0.0.1", line)
	}

	host, port, _ := net.SplitHostPort(in.udp)
	out, err := ns.run(10*time.Second, "sh", "-c", fmt.Sprintf("echo ping | nc -u -w 2 %s %s", host, port))
	if err != nil || !strings.Contains(out, "from 127.0.0.1") {
		t.Fatalf("UDP through egress: %v\n%s", err, out)
	}

	mustPing(t, ns, "127.0.0.1")

	// A closed port: the dial fails on the host, so the container gets a
	// RST, not a connection that looks open.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	_, closed, _ := net.SplitHostPort(l.Addr().String())
	l.Close()
	start := time.Now()
	out, err = ns.run(15*time.Second, "nc", "-v", "-z", "-w", "5", "127.0.0.1", closed)
	if err == nil || !strings.Contains(out, "refused") || time.Since(start) > 4*time.Second {
		t.Fatalf("connect to a closed port through egress after %v: %v\n%s", time.Since(start), err, out)
	}

	var st struct {
		Egress map[string]uint64 `json:"egress"`
	}
	if err := json.Unmarshal([]byte(d.mustCLI(t, "status", "--json").stdout), &st); err != nil {
		t.Fatal(err)
	}
	if st.Egress["tcp_dials"] < 2 || st.Egress["tcp_refused"] < 1 || st.Egress["udp_flows"] < 1 || st.Egress["ping_replies"] < 1 {
		t.Fatalf("egress status %v", st.Egress)
	}

	// Without --egress-allow-loopback the same server is refused.
	d2 := startDaemon(t)
	ns2 := newNetns(t)
	d2.attach(t, ns2, newID("pn"), newID("ap"), "web")
	loopbackOut(t, ns2)
	h2, p2, _ := net.SplitHostPort(in.tcp)
	out, err = ns2.run(15*time.Second, "nc", "-v", "-z", "-w", "5", h2, p2)
	if err == nil || !strings.Contains(out, "refused") {
		t.Fatalf("loopback through egress without --egress-allow-loopback: %v\n%s", err, out)
	}
}
