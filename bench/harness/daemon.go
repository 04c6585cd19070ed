package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/vrouter/vrouter/internal/supervise"
)

// daemon is a `vrouter run` started as nobody with setpriv, gossiping and
// tunnelling on loopback only, forwarding DNS to the suite's upstream.
type daemon struct {
	name   string
	dir    string // state dir, owned by nobody, 0700
	sock   string
	gossip int // gossip port on 127.0.0.1
	proc   *proc
}

const runningLine = `msg="vrouter running"`

// startDaemon starts a daemon named name and waits until it runs. extra
// goes after the suite's own flags (--join, --cluster-key-file, …).
func (s *Suite) startDaemon(ctx context.Context, sc *scope, name string, extra ...string) (*daemon, error) {
	dir, err := os.MkdirTemp(s.work, "state-"+name+"-")
	if err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	if err := os.Chown(dir, s.uid, s.gid); err != nil {
		return nil, fmt.Errorf("state dir: %w", err)
	}
	port, err := freeBothPort()
	if err != nil {
		return nil, err
	}
	d := &daemon{name: name, dir: dir, sock: filepath.Join(dir, "control.sock"), gossip: port}
	args := []string{
		"setpriv", "--reuid=" + daemonUser, "--regid=" + daemonGroup, "--clear-groups", "--pdeathsig", "KILL",
		s.bin, "run", "--state-dir", dir, "--control", d.sock, "--name", name,
		"--gossip", "127.0.0.1:" + strconv.Itoa(port), "--listen", "127.0.0.1:0",
		"--dns-upstream", s.upstream.Addr(), "--gossip-timing", "fast",
	}
	for _, f := range s.cfg.DaemonFlags {
		args = append(args, strings.ReplaceAll(f, "STATE", dir))
	}
	d.proc, err = s.startProc(sc, "vrouter "+name, append(args, extra...), func(c *exec.Cmd) { c.Dir = dir })
	if err != nil {
		return nil, err
	}
	err = waitFor(ctx, 20*time.Second, "daemon "+name+" running", func() error {
		if d.proc.exited() {
			return permanent(fmt.Errorf("exited (%v): %s", d.proc.err, lastLines(d.proc.out.String(), 5)))
		}
		if !strings.Contains(d.proc.out.String(), runningLine) {
			return fmt.Errorf("no %s line yet", runningLine)
		}
		_, err := os.Stat(d.sock)
		return err
	})
	if err != nil {
		return nil, err
	}
	return d, nil
}

// cli runs a client subcommand against d as root and decodes its --json
// output into v (when v is not nil).
func (s *Suite) cli(ctx context.Context, d *daemon, v any, args ...string) error {
	full := append([]string{s.bin}, args...)
	full = append(full, "--control", d.sock)
	out, err := s.run(ctx, 60*time.Second, full, nil)
	if err != nil {
		return err
	}
	if v != nil {
		if err := json.Unmarshal(out, v); err != nil {
			return fmt.Errorf("%s: decode %q: %w", strings.Join(args, " "), lastLines(string(out), 3), err)
		}
	}
	return nil
}

// container is the part of `attach --json` the suite reads.
type container struct {
	ID       string   `json:"id"`
	IP       string   `json:"ip"`
	MTU      int      `json:"mtu"`
	Resolver string   `json:"resolver"`
	Names    []string `json:"names"`
	Node     string   `json:"node"`
	Network  string   `json:"network"`
}

// attach makes ns a container of network/app on d (the CLI creates and
// configures the TUN).
func (s *Suite) attach(ctx context.Context, d *daemon, ns *netns, network, app, typ string) (container, error) {
	var c container
	err := s.cli(ctx, d, &c, "attach", "--netns", ns.path, "--network", network, "--app", app, "--type", typ, "--json")
	if err != nil {
		return c, err
	}
	if c.IP == "" {
		return c, fmt.Errorf("attach %s: no address in the answer", ns.name)
	}
	return c, nil
}

// peer is the part of `peers --json` the suite reads.
type peer struct {
	Name          string  `json:"name"`
	State         string  `json:"state"`
	Self          bool    `json:"self"`
	LastHandshake *string `json:"last_handshake"`
}

// waitCluster waits until every daemon sees every other alive with a
// WireGuard handshake done: only then do cross-node figures mean anything.
func (s *Suite) waitCluster(ctx context.Context, ds ...*daemon) error {
	return waitFor(ctx, 45*time.Second, "cluster alive with WireGuard handshakes", func() error {
		for _, d := range ds {
			var ps []peer
			if err := s.cli(ctx, d, &ps, "peers", "--json"); err != nil {
				return err
			}
			ok := 0
			for _, p := range ps {
				if !p.Self && p.State == "alive" && p.LastHandshake != nil {
					ok++
				}
			}
			if ok != len(ds)-1 {
				return fmt.Errorf("%s: %d of %d peers alive and handshaken", d.name, ok, len(ds)-1)
			}
		}
		return nil
	})
}

// waitContainer waits until d lists the container at ip of network.
func (s *Suite) waitContainer(ctx context.Context, d *daemon, network, ip string) error {
	return waitFor(ctx, 20*time.Second, fmt.Sprintf("%s knows %s", d.name, ip), func() error {
		var cs []container
		if err := s.cli(ctx, d, &cs, "containers", "--json"); err != nil {
			return err
		}
		for _, c := range cs {
			if c.Network == network && c.IP == ip {
				return nil
			}
		}
		return fmt.Errorf("not listed yet")
	})
}

// clusterKey writes a fresh cluster key the daemon user can read.
func (s *Suite) clusterKey(ctx context.Context) (string, error) {
	out, err := s.run(ctx, 10*time.Second, []string{s.bin, "keygen"}, nil)
	if err != nil {
		return "", err
	}
	path := filepath.Join(s.work, "cluster-"+randomHex(3)+".key")
	if err := os.WriteFile(path, out, 0o600); err != nil {
		return "", fmt.Errorf("cluster key: %w", err)
	}
	if err := os.Chown(path, s.uid, s.gid); err != nil {
		return "", fmt.Errorf("cluster key: %w", err)
	}
	return path, nil
}

// status is the part of `status --json` the suite reads.
type status struct {
	Counters map[string]uint64 `json:"counters"`
	Drops    map[string]uint64 `json:"drops"`
	DNS      struct {
		Rcodes   map[string]uint64 `json:"rcodes"`
		Counters map[string]uint64 `json:"counters"`
	} `json:"dns"`
}

// runFlags is the help text of `vrouter run`, to find out which features
// this build has.
func (s *Suite) runFlags(ctx context.Context) string {
	out, _ := s.run(ctx, 10*time.Second, []string{s.bin, "run", "--help"}, nil)
	return string(out)
}

// newID returns a network ("pn") or app ("ap") id: prefix + UUIDv4.
func newID(prefix string) string {
	b := make([]byte, 16)
	_, _ = rand.Read(b)
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	x := hex.EncodeToString(b)
	return fmt.Sprintf("%s-%s-%s-%s-%s-%s", prefix, x[0:8], x[8:12], x[12:16], x[16:20], x[20:32])
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// worker is the pid of the daemon's forwarding worker (the child of the
// `vrouter run` supervisor): the process whose CPU and memory count.
func (d *daemon) worker() int {
	if pid, err := supervise.WorkerOf(d.proc.pid()); err == nil {
		return pid
	}
	return d.proc.pid()
}
