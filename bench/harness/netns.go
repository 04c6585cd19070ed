package harness

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// netns is a network namespace the suite made (`ip netns add`); it stands
// for a container or a baseline's endpoint. A nil *netns is the host's
// namespace.
type netns struct {
	name string
	path string
}

// newNetns creates vrb-<run>-<tag><n>; sc deletes it (and the
// /etc/netns/NAME that attach --write-resolv-conf may have written). Its
// veths, TUNs and nftables rules go with it.
func (s *Suite) newNetns(ctx context.Context, sc *scope, tag string) (*netns, error) {
	s.nsSeq++
	n := &netns{name: fmt.Sprintf("vrb-%s-%s%d", s.runID, tag, s.nsSeq)}
	n.path = "/run/netns/" + n.name
	if _, err := s.run(ctx, 10*time.Second, []string{"ip", "netns", "add", n.name}, nil); err != nil {
		return nil, err
	}
	sc.add("delete netns "+n.name, func() error {
		// Not bound to ctx: the cleanup must run after Ctrl-C too.
		_, err := s.run(context.Background(), 30*time.Second, []string{"ip", "netns", "del", n.name}, nil)
		return errors.Join(err, os.RemoveAll("/etc/netns/"+n.name))
	})
	if _, err := s.run(ctx, 10*time.Second, []string{"ip", "-n", n.name, "link", "set", "lo", "up"}, nil); err != nil {
		return nil, err
	}
	return n, nil
}

// cmd prefixes args with `ip netns exec NAME` (ip execs the program, so the
// PID is the program's own); for the host namespace it returns args.
func (n *netns) cmd(args ...string) []string {
	if n == nil {
		return args
	}
	return append([]string{"ip", "netns", "exec", n.name}, args...)
}

func (n *netns) String() string {
	if n == nil {
		return "host"
	}
	return n.name
}

// ip runs `ip -n NAME args…` (plain `ip` for the host).
func (s *Suite) ip(ctx context.Context, n *netns, args ...string) error {
	full := []string{"ip"}
	if n != nil {
		full = append(full, "-n", n.name)
	}
	_, err := s.run(ctx, 10*time.Second, append(full, args...), nil)
	return err
}

// veth joins a and b with a veth pair: addrA on a's end, addrB on b's,
// both with mtu, both up.
func (s *Suite) veth(ctx context.Context, a, b *netns, addrA, addrB string, mtu int) error {
	s.nsSeq++
	ea, eb := fmt.Sprintf("vb%s%da", s.runID, s.nsSeq), fmt.Sprintf("vb%s%db", s.runID, s.nsSeq)
	if err := s.ip(ctx, nil, "link", "add", ea, "netns", a.name, "type", "veth", "peer", "name", eb, "netns", b.name); err != nil {
		return err
	}
	for _, e := range []struct {
		ns        *netns
		dev, addr string
	}{{a, ea, addrA}, {b, eb, addrB}} {
		if err := s.ip(ctx, e.ns, "addr", "add", e.addr, "dev", e.dev); err != nil {
			return err
		}
		if err := s.ip(ctx, e.ns, "link", "set", e.dev, "mtu", strconv.Itoa(mtu), "up"); err != nil {
			return err
		}
	}
	return nil
}

// guardRuleset lets the namespace send through its tap device to the
// mapped gateway only: slirp4netns and pasta would turn any other
// destination into a connection from the host to the real network.
const guardRuleset = `table inet vrbench_guard {
	chain out {
		type filter hook output priority 0; policy accept;
		oifname "tap0" ip daddr != 10.0.2.2 drop
		oifname "tap0" meta nfproto ipv6 drop
	}
}
`

// guard installs guardRuleset in n and checks it is in place. The rules
// live and die with the namespace.
func (s *Suite) guard(ctx context.Context, n *netns) error {
	if _, err := s.run(ctx, 10*time.Second, n.cmd("nft", "-f", "-"), func(c *exec.Cmd) {
		c.Stdin = strings.NewReader(guardRuleset)
	}); err != nil {
		return fmt.Errorf("nftables guard: %w", err)
	}
	out, err := s.run(ctx, 10*time.Second, n.cmd("nft", "list", "table", "inet", "vrbench_guard"), nil)
	if err != nil {
		return fmt.Errorf("nftables guard: %w", err)
	}
	if !strings.Contains(string(out), "ip daddr != 10.0.2.2 drop") {
		return fmt.Errorf("nftables guard not in place:\n%s", out)
	}
	return nil
}

// waitListening polls ss in n until something listens on port ("t" TCP,
// "u" UDP), so that a client never races its server's bind.
func (s *Suite) waitListening(ctx context.Context, n *netns, proto string, port int, p *proc) error {
	return waitFor(ctx, 10*time.Second, fmt.Sprintf("%s listening on %s/%d in %s", procName(p), proto, port, n), func() error {
		if p != nil && p.exited() {
			return permanent(fmt.Errorf("%s exited: %v: %s", p.name, p.err, lastLines(p.out.String(), 3)))
		}
		out, err := s.run(ctx, 5*time.Second, n.cmd("ss", "-Hln"+proto, fmt.Sprintf("sport = :%d", port)), nil)
		if err != nil {
			return err
		}
		if strings.TrimSpace(string(out)) == "" {
			return errors.New("nothing listens yet")
		}
		return nil
	})
}

func procName(p *proc) string {
	if p == nil {
		return "server"
	}
	return p.name
}

// freePort returns a TCP port free on 127.0.0.1 now. Inside the suite's
// own namespaces any port is free; on the host this avoids other users'.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("free port: %w", err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// freeBothPort returns a port free for TCP and UDP on 127.0.0.1 (memberlist
// needs both on one port).
func freeBothPort() (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, fmt.Errorf("free port: %w", err)
		}
		port := l.Addr().(*net.TCPAddr).Port
		u, err := net.ListenPacket("udp", fmt.Sprintf("127.0.0.1:%d", port))
		l.Close()
		if err == nil {
			u.Close()
			return port, nil
		}
	}
	return 0, errors.New("no port free for both TCP and UDP")
}

type permanentError struct{ error }

func (e permanentError) Unwrap() error { return e.error }

// permanent marks an error that waitFor must not retry.
func permanent(err error) error { return permanentError{err} }

// waitFor polls check every 50 ms until it returns nil, a permanent error,
// timeout, or ctx ends.
func waitFor(ctx context.Context, timeout time.Duration, what string, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		var pe permanentError
		if errors.As(err, &pe) {
			return fmt.Errorf("%s: %w", what, pe.error)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not so after %v: %w", what, timeout, err)
		}
		t := time.NewTimer(50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("%s: %w", what, ctx.Err())
		case <-t.C:
		}
	}
}
