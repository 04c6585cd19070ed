//go:build e2e

package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"slices"
	"strings"
	"testing"
)

// result is what one run of the CLI gave.
type result struct {
	args   []string
	stdout string
	stderr string
	code   int
}

func (r result) String() string {
	return fmt.Sprintf("vrouter %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(r.args, " "), r.code, r.stdout, r.stderr)
}

// runCLI runs the binary as root (clients need no privilege, but attach
// --netns does) with extra files as fds 3, 4, … and env added to a copy of
// the test's environment without VROUTER_CONTROL.
func runCLI(t *testing.T, extraFiles []*os.File, env []string, args ...string) result {
	t.Helper()
	r, err := execCLI(extraFiles, env, args...)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// execCLI is runCLI for goroutines other than the test's: an error means
// the binary could not be run or did not finish in time.
func execCLI(extraFiles []*os.File, env []string, args ...string) (result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.bin, args...)
	cmd.ExtraFiles = extraFiles
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "VROUTER_CONTROL=") {
			cmd.Env = append(cmd.Env, kv)
		}
	}
	cmd.Env = append(cmd.Env, env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	r := result{args: args, stdout: stdout.String(), stderr: stderr.String()}
	var ee *exec.ExitError
	switch {
	case err == nil:
	case errors.As(err, &ee) && ee.Exited():
		r.code = ee.ExitCode()
	default:
		return r, fmt.Errorf("vrouter %s: %w (stderr %q)", strings.Join(args, " "), err, r.stderr)
	}
	return r, nil
}

// cli runs a client subcommand against d: `vrouter SUB --control SOCK ARGS`.
func (d *daemon) cli(t *testing.T, sub string, args ...string) result {
	t.Helper()
	return runCLI(t, nil, nil, append([]string{sub, "--control", d.sock}, args...)...)
}

// mustCLI is cli that fails the test unless the command exits 0.
func (d *daemon) mustCLI(t *testing.T, sub string, args ...string) result {
	t.Helper()
	r := d.cli(t, sub, args...)
	if r.code != 0 {
		t.Fatalf("%v", r)
	}
	return r
}

// container is the object of `attach --json` and `containers --json`.
type container struct {
	ID         string   `json:"id"`
	IP         string   `json:"ip"`
	MTU        int      `json:"mtu"`
	Resolver   string   `json:"resolver"`
	Names      []string `json:"names"`
	Network    string   `json:"network"`
	App        string   `json:"app"`
	Type       string   `json:"type"`
	Number     int      `json:"number"`
	Interface  string   `json:"interface"`
	Node       string   `json:"node"`
	AttachedAt any      `json:"attached_at"`
}

var containerKeys = []string{"id", "ip", "mtu", "resolver", "names", "network", "app", "type", "number", "interface", "node", "attached_at"}

// decodeContainer decodes one container object and checks that it carries
// every key of the contract.
func decodeContainer(t *testing.T, raw []byte) container {
	t.Helper()
	requireKeys(t, "container", raw, containerKeys)
	var c container
	if err := json.Unmarshal(raw, &c); err != nil {
		t.Fatalf("decode container %s: %v", raw, err)
	}
	return c
}

func requireKeys(t *testing.T, what string, raw []byte, keys []string) map[string]json.RawMessage {
	t.Helper()
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("%s is not a JSON object: %v: %s", what, err, raw)
	}
	for _, k := range keys {
		if _, ok := m[k]; !ok {
			t.Errorf("contract: %s JSON lacks key %q: %s", what, k, raw)
		}
	}
	return m
}

// attach runs `vrouter attach --netns` for ns as root and returns the
// decoded --json object.
func (d *daemon) attach(t *testing.T, ns *netns, network, app, typ string, extra ...string) container {
	t.Helper()
	args := append([]string{"--netns", ns.path, "--network", network, "--app", app, "--type", typ, "--json"}, extra...)
	r := d.cli(t, "attach", args...)
	if r.code != 0 {
		t.Fatalf("attach: %v", r)
	}
	c := decodeContainer(t, []byte(r.stdout))
	checkContainer(t, c, network, app, typ)
	return c
}

// attachFD runs `vrouter attach --fd 3` with f as fd 3; it may run on any
// goroutine.
func (d *daemon) attachFD(f *os.File, network, app, typ string, extra ...string) (result, error) {
	args := append([]string{"attach", "--control", d.sock, "--fd", "3", "--network", network, "--app", app, "--type", typ, "--json"}, extra...)
	return execCLI([]*os.File{f}, nil, args...)
}

// checkContainer checks the fields of an attach result against what was
// asked and the contract's defaults.
func checkContainer(t *testing.T, c container, network, app, typ string) {
	t.Helper()
	if c.ID == "" {
		t.Errorf("container has no id: %+v", c)
	}
	if c.Network != network || c.App != app || c.Type != typ {
		t.Errorf("container %s: network/app/type = %s/%s/%s, want %s/%s/%s", c.ID, c.Network, c.App, c.Type, network, app, typ)
	}
	ip, err := netip.ParseAddr(c.IP)
	if err != nil || !inPrivateRange(ip) {
		t.Errorf("container %s: ip %q not in 10.240.0.1-10.240.3.254", c.ID, c.IP)
	}
	if c.MTU != defaultMTU {
		t.Errorf("container %s: mtu %d, want %d", c.ID, c.MTU, defaultMTU)
	}
	if c.Resolver != resolverAddr {
		t.Errorf("container %s: resolver %q, want %s", c.ID, c.Resolver, resolverAddr)
	}
	if c.Node != nodeName {
		t.Errorf("container %s: node %q, want %s", c.ID, c.Node, nodeName)
	}
	if c.Number < 1 {
		t.Errorf("container %s: number %d, want >= 1", c.ID, c.Number)
	}
	if want := expectedNames(network, app, typ, c.Number); !slices.Equal(c.Names, want) {
		t.Errorf("container %s: names %q, want %q", c.ID, c.Names, want)
	}
}

// expectedNames are the DNS names of DESIGN.md, most specific first.
func expectedNames(network, app, typ string, number int) []string {
	base := app + "." + network + nameZoneSuffix
	names := []string{fmt.Sprintf("%d.%s.%s", number, typ, base), typ + "." + base}
	if typ == "web" {
		names = append(names, base)
	}
	return names
}

func inPrivateRange(ip netip.Addr) bool {
	lo, hi := netip.MustParseAddr("10.240.0.1"), netip.MustParseAddr("10.240.3.254")
	return ip.Is4() && ip.Compare(lo) >= 0 && ip.Compare(hi) <= 0
}

// containers returns `vrouter containers --json`.
func (d *daemon) containers(t *testing.T) []container {
	t.Helper()
	r := d.mustCLI(t, "containers", "--json")
	var raws []json.RawMessage
	if err := json.Unmarshal([]byte(r.stdout), &raws); err != nil {
		t.Fatalf("containers --json is not a JSON array: %v: %q", err, r.stdout)
	}
	cs := make([]container, 0, len(raws))
	for _, raw := range raws {
		cs = append(cs, decodeContainer(t, raw))
	}
	return cs
}

// status is the part of `vrouter status --json` the tests read.
type status struct {
	Node          string            `json:"node"`
	Version       string            `json:"version"`
	UptimeSeconds float64           `json:"uptime_seconds"`
	Control       string            `json:"control"`
	MTU           int               `json:"mtu"`
	Counters      map[string]uint64 `json:"counters"`
	Drops         map[string]uint64 `json:"drops"`
	Alarms        []string          `json:"alarms"`
	Containers    int               `json:"-"` // a count or the length of an array
	Networks      int               `json:"-"`
}

var (
	statusKeys  = []string{"node", "version", "uptime_seconds", "control", "mtu", "containers", "networks", "counters", "drops"}
	dropReasons = []string{"malformed", "not_ipv4", "spoofed_source", "unknown_destination", "outside_network", "resolver", "broadcast", "too_big", "write_error"}
)

// status returns `vrouter status --json`, checked for the contract's keys.
func (d *daemon) status(t *testing.T) status {
	t.Helper()
	r := d.mustCLI(t, "status", "--json")
	m := requireKeys(t, "status", []byte(r.stdout), statusKeys)
	var s status
	if err := json.Unmarshal([]byte(r.stdout), &s); err != nil {
		t.Fatalf("decode status: %v: %s", err, r.stdout)
	}
	var err error
	if s.Containers, err = countOf(m["containers"]); err != nil {
		t.Errorf("status containers: %v", err)
	}
	if s.Networks, err = countOf(m["networks"]); err != nil {
		t.Errorf("status networks: %v", err)
	}
	for _, reason := range dropReasons {
		if _, ok := s.Drops[reason]; !ok {
			t.Errorf("contract: status drops lacks reason %q: %v", reason, s.Drops)
		}
	}
	return s
}

// countOf reads a status field that the contract leaves as "a count": a
// number, or an array whose length is the count.
func countOf(raw json.RawMessage) (int, error) {
	var n int
	if err := json.Unmarshal(raw, &n); err == nil {
		return n, nil
	}
	var a []json.RawMessage
	if err := json.Unmarshal(raw, &a); err == nil {
		return len(a), nil
	}
	return 0, fmt.Errorf("neither a number nor an array: %s", raw)
}

// expectError checks the contract for a failed command: exit code, exactly
// one line on stderr starting with "vrouter: ", containing want.
func expectError(t *testing.T, r result, code int, want string) {
	t.Helper()
	if r.code == 0 {
		t.Errorf("succeeded, want exit %d: %v", code, r)
		return
	}
	if code > 0 && r.code != code {
		t.Errorf("exit %d, want %d: %v", r.code, code, r)
	}
	line := strings.TrimSuffix(r.stderr, "\n")
	if strings.Contains(line, "\n") || !strings.HasPrefix(line, "vrouter: ") {
		t.Errorf("stderr is not one line starting with %q: %q", "vrouter: ", r.stderr)
	}
	if !strings.Contains(strings.ToLower(line), strings.ToLower(want)) {
		t.Errorf("stderr %q does not mention %q", line, want)
	}
}
