package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

const (
	pn = "pn-ad0fd6a1-d05e-40ea-bf63-c4f8a75a9d8c"
	ap = "ap-a71da13f-7c70-4c00-a644-eee8558d8053"
)

// TestBadInput checks the CLI contract for input the CLI itself refuses:
// one line on stderr starting with "vrouter: ", the right exit code, and
// nothing on stdout.
func TestBadInput(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.sock")
	attach := func(extra ...string) []string {
		return append([]string{"attach", "--control", missing, "--netns", "/run/netns/x", "--network", pn, "--app", ap, "--type", "web"}, extra...)
	}
	tests := []badInput{
		{"unknown command", []string{"frobnicate"}, exitUsage, "unknown command"},
		{"unknown flag", []string{"attach", "--frob"}, exitUsage, "unknown flag"},
		{"run unknown flag", []string{"run", "--nope"}, exitUsage, "unknown flag"},
		{"run bad mtu", []string{"run", "--mtu", "10"}, exitUsage, "--mtu"},
		{"run bad log level", []string{"run", "--log-level", "loud"}, exitUsage, "--log-level"},
		{"no netns or fd", []string{"attach", "--network", pn, "--app", ap, "--type", "web"}, exitUsage, "--netns PATH or --fd N"},
		{"both netns and fd", attach("--fd", "3"), exitUsage, "exclude"},
		{"missing network", []string{"attach", "--netns", "/x", "--app", ap, "--type", "web"}, exitUsage, "--network is required"},
		{"malformed network", []string{"attach", "--netns", "/x", "--network", "pn-1", "--app", ap, "--type", "web"}, exitUsage, "malformed network id"},
		{"malformed app", []string{"attach", "--netns", "/x", "--network", pn, "--app", "ap-XYZ", "--type", "web"}, exitUsage, "malformed app id"},
		{"bad type", []string{"attach", "--netns", "/x", "--network", pn, "--app", ap, "--type", "Web_1"}, exitUsage, "[a-z][a-z0-9-]*"},
		{"ip outside", attach("--ip", "10.240.4.0"), exitUsage, "outside 10.240.0.1-10.240.3.254"},
		{"ip garbage", attach("--ip", "banana"), exitUsage, "not an IPv4 address"},
		{"bad ifname", attach("--ifname", "a/b"), exitUsage, "--ifname"},
		{"daemon not running", attach(), exitFailure, "daemon not running: no control socket at " + missing},
		{"detach needs id", []string{"detach"}, exitUsage, "one container id"},
		{"detach daemon missing", []string{"detach", "--control", missing, "c-1"}, exitFailure, "daemon not running"},
		{"status daemon missing", []string{"status", "--control", missing}, exitFailure, "daemon not running"},
		{"containers extra arg", []string{"containers", "x"}, exitUsage, "no arguments"},
		{"names needs app", []string{"names"}, exitUsage, "--app"},
		{"names malformed app", []string{"names", "--app", "ap-1"}, exitUsage, "malformed app id"},
		{"names malformed network", []string{"names", "--app", ap, "--network", "x"}, exitUsage, "malformed network id"},
		{"names daemon missing", []string{"names", "--control", missing, "--app", ap}, exitFailure, "daemon not running"},
		{"run debug listen not loopback", []string{"run", "--debug-listen", "0.0.0.0:6060"}, exitUsage, "loopback"},
		{"run debug listen no port", []string{"run", "--debug-listen", "127.0.0.1"}, exitUsage, "--debug-listen"},
		{"run bad dns upstream", []string{"run", "--dns-upstream", "resolver.example:53"}, exitUsage, "--dns-upstream"},
		{"resolv.conf without netns", []string{"attach", "--fd", "3", "--network", pn, "--app", ap, "--type", "web", "--write-resolv-conf"}, exitUsage, "needs --netns"},
		{"resolv.conf of a foreign netns", []string{"attach", "--control", missing, "--netns", "/proc/1/ns/net", "--network", pn, "--app", ap, "--type", "web", "--write-resolv-conf"}, exitUsage, "not a namespace of ip netns"},
	}
	checkBadInput(t, tests)
}

func TestHelp(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run([]string{"attach", "--help"}, &stdout, &stderr); code != exitOK {
		t.Fatalf("attach --help exit %d", code)
	}
	if !strings.Contains(stdout.String(), "--network") || stderr.Len() != 0 {
		t.Fatalf("attach --help: stdout %q stderr %q", stdout.String(), stderr.String())
	}
	stdout.Reset()
	if code := run([]string{"--help"}, &stdout, &stderr); code != exitOK || !strings.Contains(stdout.String(), "attach") {
		t.Fatalf("--help exit %d, stdout %q", code, stdout.String())
	}
}

// badInput is a command line that must fail with code and a one-line
// error on stderr containing want.
type badInput struct {
	name string
	args []string
	code int
	want string
}

// checkBadInput runs each case: exit code, exactly one "vrouter: " line
// on stderr, nothing on stdout.
func checkBadInput(t *testing.T, tests []badInput) {
	t.Helper()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tt.code, stderr.String())
			}
			msg := stderr.String()
			if !strings.HasPrefix(msg, "vrouter: ") || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, tt.want) {
				t.Errorf("stderr %q: want one line starting with \"vrouter: \" containing %q", msg, tt.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
		})
	}
}
