package harness

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/bench/report"
)

// machine describes this host from /proc and uname.
func machine() report.Machine {
	m := report.Machine{Cores: runtime.NumCPU(), CPU: "unknown"}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	var u unix.Utsname
	if unix.Uname(&u) == nil {
		m.Kernel = unix.ByteSliceToString(u.Release[:])
	}
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for line := range strings.SplitSeq(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				if f := strings.Fields(v); len(f) > 0 {
					kb, _ := strconv.ParseFloat(f[0], 64)
					m.MemoryGiB = kb / (1 << 20)
				}
			}
		}
	}
	m.CongestionControl = readTrim("/proc/sys/net/ipv4/tcp_congestion_control")
	if f := strings.Fields(readTrim("/proc/loadavg")); len(f) >= 3 {
		m.LoadAvg = strings.Join(f[:3], " ")
	}
	return m
}

func readTrim(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return strings.TrimSpace(string(b))
}

// Tools the scenarios run, with the Debian package that has each.
var toolPackages = map[string]string{
	"ip":          "iproute2",
	"ss":          "iproute2",
	"setpriv":     "util-linux",
	"iperf3":      "iperf3",
	"sockperf":    "sockperf",
	"wg":          "wireguard-tools (--no-install-recommends)",
	"slirp4netns": "slirp4netns",
	"pasta":       "passt",
	"nft":         "nftables",
}

// needTools returns nil when every tool is on PATH, else a skip naming the
// missing ones and their packages, or under CI an error: CI installs them.
func (s *Suite) needTools(tools ...string) error {
	var missing, pkgs []string
	for _, t := range tools {
		if _, err := exec.LookPath(t); err != nil {
			missing = append(missing, t)
			pkgs = append(pkgs, toolPackages[t])
		}
	}
	if len(missing) == 0 {
		return nil
	}
	msg := fmt.Sprintf("missing %s (apt-get install %s)", strings.Join(missing, ", "), strings.Join(pkgs, " "))
	if s.cfg.CI {
		return fmt.Errorf("CI=true: %s", msg)
	}
	return skipError{msg}
}

// versions records what the figures were measured with.
func (s *Suite) versions(ctx context.Context) map[string]string {
	v := map[string]string{"go (driver)": runtime.Version()}
	first := func(args ...string) string {
		if _, err := exec.LookPath(args[0]); err != nil && !filepath.IsAbs(args[0]) {
			return "not installed"
		}
		out, err := s.run(ctx, 10*time.Second, args, nil)
		line := strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
		// "wireguard-tools v1.0.20210914 - https://…": the URL adds nothing.
		line, _, _ = strings.Cut(line, " - ")
		if err != nil && line == "" {
			return "unknown"
		}
		return line
	}
	v["go (micro-benchmarks)"] = strings.TrimPrefix(first(s.cfg.Go, "version"), "go version ")
	v["vrouter"] = s.gitRev(ctx)
	v["iperf3"] = first("iperf3", "--version")
	v["sockperf"] = strings.TrimPrefix(first("sockperf", "--version"), "sockperf, ")
	v["slirp4netns"] = first("slirp4netns", "--version")
	v["pasta"] = debVersion(ctx, s, "passt")
	v["wireguard-tools"] = first("wg", "--version")
	if s.cfg.WireGuardGo != "" {
		if _, err := os.Stat(s.cfg.WireGuardGo); err == nil {
			v["wireguard-go"] = first(s.cfg.WireGuardGo, "--version")
		}
	}
	v["wireguard module (go.mod)"] = goModVersion(filepath.Join(s.cfg.RepoDir, "go.mod"), "golang.zx2c4.com/wireguard")
	if _, err := os.Stat("/sys/module/wireguard"); err == nil {
		v["wireguard kernel module"] = "loaded"
	} else {
		v["wireguard kernel module"] = "absent"
	}
	return v
}

// gitRev is the checkout's commit, with "+dirty" when tracked files differ
// from it. Read-only git plumbing only: nothing here writes the index.
func (s *Suite) gitRev(ctx context.Context) string {
	out, err := s.run(ctx, 10*time.Second, []string{"git", "-C", s.cfg.RepoDir, "rev-parse", "--short=12", "HEAD"}, nil)
	if err != nil {
		return "unknown (no git)"
	}
	rev := strings.TrimSpace(string(out))
	if _, err := s.run(ctx, 10*time.Second, []string{"git", "-C", s.cfg.RepoDir, "diff-index", "--quiet", "HEAD", "--"}, nil); err != nil {
		rev += "+dirty"
	}
	return rev
}

func debVersion(ctx context.Context, s *Suite, pkg string) string {
	out, err := s.run(ctx, 10*time.Second, []string{"dpkg-query", "-W", "-f", "${Version}", pkg}, nil)
	if err != nil || len(out) == 0 {
		return "unknown"
	}
	return "Debian " + strings.TrimSpace(string(out))
}

// goModVersion reads the required version of module from a go.mod.
func goModVersion(path, module string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "unknown"
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		f := strings.Fields(strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "require")))
		if len(f) >= 2 && f[0] == module {
			return f[1]
		}
	}
	return "unknown"
}
