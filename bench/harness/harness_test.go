package harness

import (
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseStatTicks(t *testing.T) {
	// The command name may hold spaces and parentheses.
	line := "1234 (vrouter (x) y) S 1 1234 1234 0 -1 4194560 1000 0 0 0 250 50 0 0 20 0 12 0 100 0 0\n"
	got, err := parseStatTicks([]byte(line))
	if err != nil || got != 300 {
		t.Fatalf("parseStatTicks = %d, %v; want 300", got, err)
	}
	for _, bad := range []string{"", "1 (x S 1 2", "1 (x) S 1 2 3", "1 (x) S 1 1 1 0 -1 0 0 0 0 0 u s"} {
		if _, err := parseStatTicks([]byte(bad)); err == nil {
			t.Errorf("parseStatTicks(%q) accepted", bad)
		}
	}
	// Our own process has a readable, growing figure.
	if _, err := cpuTicks(os.Getpid()); err != nil {
		t.Errorf("cpuTicks(self): %v", err)
	}
	if kb, err := rssKiB(os.Getpid()); err != nil || kb <= 0 {
		t.Errorf("rssKiB(self) = %d, %v", kb, err)
	}
}

func FuzzParseStatTicks(f *testing.F) {
	f.Add([]byte("1 (a) S 1 1 1 0 -1 0 0 0 0 0 5 6 0 0"))
	f.Add([]byte(")))"))
	f.Fuzz(func(t *testing.T, b []byte) { _, _ = parseStatTicks(b) })
}

func TestCPUMeter(t *testing.T) {
	if _, ok := startCPU(nil).cores(); ok {
		t.Error("a kernel path (no PIDs) reported a CPU figure")
	}
	m := startCPU([]int{os.Getpid()})
	deadline := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(deadline) { // burn some CPU to measure
	}
	if c, ok := m.cores(); !ok || c < 0 || c > 4 {
		t.Errorf("cores = %v, %v", c, ok)
	}
}

func TestScope(t *testing.T) {
	sc := newScope("test", slog.New(slog.DiscardHandler))
	var order []string
	sc.add("a", func() error { order = append(order, "a"); return nil })
	sc.add("b", func() error { order = append(order, "b"); return errors.New("boom") })
	sc.add("c", func() error { order = append(order, "c"); return nil })
	err := sc.close()
	if err == nil || !strings.Contains(err.Error(), "b: boom") {
		t.Errorf("close error %v, want b's", err)
	}
	if !reflect.DeepEqual(order, []string{"c", "b", "a"}) {
		t.Errorf("undo order %v, want last added first", order)
	}
	if err := sc.close(); err != nil || len(order) != 3 {
		t.Errorf("second close ran steps again: %v, %v", order, err)
	}
	// Added after close: undone at once, never leaked.
	sc.add("late", func() error { order = append(order, "late"); return nil })
	if order[len(order)-1] != "late" {
		t.Errorf("a step added to a closed scope did not run: %v", order)
	}
}

func TestCapBuffer(t *testing.T) {
	b := &capBuffer{max: 5}
	for _, s := range []string{"abc", "defg", "hij"} {
		if n, err := b.Write([]byte(s)); n != len(s) || err != nil {
			t.Fatalf("Write(%q) = %d, %v", s, n, err)
		}
	}
	if b.String() != "abcde" {
		t.Errorf("kept %q, want the first 5 bytes", b.String())
	}
}

func TestGoModVersion(t *testing.T) {
	dir := t.TempDir()
	mod := "module x\n\ngo 1.26\n\nrequire (\n\tgithub.com/a/b v1.2.3\n\tgolang.zx2c4.com/wireguard v0.0.0-2026-abc // indirect\n)\nrequire github.com/c/d v0.1.0\n"
	p := filepath.Join(dir, "go.mod")
	if err := os.WriteFile(p, []byte(mod), 0o644); err != nil {
		t.Fatal(err)
	}
	for mod, want := range map[string]string{
		"golang.zx2c4.com/wireguard": "v0.0.0-2026-abc", "github.com/c/d": "v0.1.0", "github.com/nope": "unknown",
	} {
		if got := goModVersion(p, mod); got != want {
			t.Errorf("goModVersion(%s) = %q, want %q", mod, got, want)
		}
	}
	// The repository's own go.mod names the wireguard-go the baseline is
	// built from.
	if v := goModVersion("../../go.mod", "golang.zx2c4.com/wireguard"); !strings.HasPrefix(v, "v") {
		t.Errorf("wireguard in go.mod: %q", v)
	}
}

func TestBenchPackages(t *testing.T) {
	root := t.TempDir()
	files := map[string]string{
		"router/forward_test.go":    "package router\n\nfunc BenchmarkForward(b *testing.B) {}\n",
		"dns/x_test.go":             "package dns\n\nfunc TestX(t *testing.T) {}\n",
		"bench/stats/s_test.go":     "package stats\n\nfunc BenchmarkOwn(b *testing.B) {}\n",
		"internal/e2e/e_test.go":    "package e2e\n\nfunc BenchmarkE2E(b *testing.B) {}\n",
		"internal/daemon/d_test.go": "package daemon\n\nfunc BenchmarkFill(b *testing.B) {}\n",
		"internal/x/y/z_test.go":    "package y\n\nfunc BenchmarkDeep(b *testing.B) {}\n",
		"router/forward.go":         "package router\n\nfunc BenchmarkNotATest() {}\n",
		".hidden/h_test.go":         "package h\n\nfunc BenchmarkHidden(b *testing.B) {}\n",
		"router/testdata/t_test.go": "package t\n\nfunc BenchmarkData(b *testing.B) {}\n",
	}
	for name, body := range files {
		p := filepath.Join(root, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	got, err := benchPackages(root)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"./internal/x/y/", "./router/"}; !reflect.DeepEqual(got, want) {
		t.Errorf("benchPackages = %v, want %v", got, want)
	}
}

func TestShortArgsAndNames(t *testing.T) {
	if got := shortArgs([]string{"ip", "netns", "exec", "vrb-1", "iperf3", "-c"}); !reflect.DeepEqual(got, []string{"[vrb-1]", "iperf3", "-c"}) {
		t.Errorf("shortArgs = %v", got)
	}
	var host *netns
	if got := host.cmd("ss", "-l"); !reflect.DeepEqual(got, []string{"ss", "-l"}) || host.String() != "host" {
		t.Errorf("host namespace cmd = %v", got)
	}
	n := &netns{name: "vrb-x"}
	if got := n.cmd("ss"); !reflect.DeepEqual(got, []string{"ip", "netns", "exec", "vrb-x", "ss"}) {
		t.Errorf("netns cmd = %v", got)
	}
	if id := newID("pn"); len(id) != len("pn-")+36 || id[3+14] != '4' {
		t.Errorf("newID = %q", id)
	}
}

func TestParamsQuickIsQuick(t *testing.T) {
	q, f := paramsFor(true), paramsFor(false)
	if q.iperfSeconds*q.iperfRuns > 2 || q.loadSeconds > 2*time.Second || q.ports > 128 {
		t.Errorf("quick params are not quick: %+v", q)
	}
	if f.ports != 1022 || f.iperfRuns < 3 {
		t.Errorf("full params: %+v", f)
	}
}

func TestNeedTools(t *testing.T) {
	s := &Suite{}
	if err := s.needTools("sh"); err != nil {
		t.Errorf("sh is missing? %v", err)
	}
	err := s.needTools("vrbench-no-such-tool")
	var sk skipError
	if !errors.As(err, &sk) || !strings.Contains(sk.why, "missing vrbench-no-such-tool") {
		t.Errorf("missing tool off CI: %v, want a skip naming it", err)
	}
	s.cfg.CI = true
	if err := s.needTools("vrbench-no-such-tool"); err == nil || errors.As(err, &sk) {
		t.Errorf("missing tool under CI=true: %v, want an error, not a skip", err)
	}
}
