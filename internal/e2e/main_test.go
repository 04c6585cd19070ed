//go:build e2e

package e2e

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

var vrouterFlag = flag.String("vrouter", "", "vrouter binary under test (default $VROUTER_BIN, else ../../bin/vrouter)")

// The users the daemon runs as: it must need no privileges at all.
const (
	daemonUser  = "nobody"
	daemonGroup = "nogroup"
)

// tools are the programs the tier runs; .ci/run installs them.
var tools = []string{"setpriv", "ip", "ss", "ping", "nc", "iperf3", "dig", "getent"}

// harness is what TestMain found out about this machine. Tests reach it
// through need, which skips or fails them when the tier cannot run.
type harness struct {
	bin      string // a copy of the binary that the daemon user can execute
	uid, gid int    // of daemonUser and daemonGroup
	ci       bool
	problem  error // why the tier cannot run here; nil when it can
	upstream *fakeUpstream
}

var h harness

func TestMain(m *testing.M) {
	if spec := os.Getenv(stormEnv); spec != "" {
		runStorm(spec) // this binary inside a container (storm_test.go)
	}
	flag.Parse()
	h.ci = os.Getenv("CI") == "true"
	cleanup, err := prepare()
	if err != nil {
		h.problem = err
		fmt.Fprintf(os.Stderr, "e2e: tier cannot run: %v\n", err)
	}
	code := m.Run()
	cleanup()
	os.Exit(code)
}

// need stops a test that cannot run here: a skip on a developer's machine, a
// failure in CI, where a skipped end-to-end test would hide a broken tier.
func need(t *testing.T) {
	t.Helper()
	if h.problem == nil {
		return
	}
	if h.ci {
		t.Fatalf("CI=true and the e2e tier cannot run: %v", h.problem)
	}
	t.Skipf("e2e tier skipped: %v", h.problem)
}

func prepare() (cleanup func(), err error) {
	cleanup = func() {}
	if os.Geteuid() != 0 {
		return cleanup, errors.New("must run as root (it creates network namespaces and TUN devices and drops to nobody with setpriv)")
	}
	var missing []string
	for _, tool := range tools {
		if _, err := exec.LookPath(tool); err != nil {
			missing = append(missing, tool)
		}
	}
	if len(missing) > 0 {
		return cleanup, fmt.Errorf("missing tools %s (apt-get install iproute2 iputils-ping netcat-openbsd iperf3 util-linux bind9-dnsutils)", strings.Join(missing, ", "))
	}
	if h.uid, h.gid, err = daemonIDs(); err != nil {
		return cleanup, err
	}
	src, err := binaryPath()
	if err != nil {
		return cleanup, err
	}
	// The checkout may sit under a directory nobody cannot traverse, so the
	// daemon runs from a world-readable copy.
	dir, err := os.MkdirTemp("", "vre2e-bin-")
	if err != nil {
		return cleanup, fmt.Errorf("binary dir: %w", err)
	}
	cleanup = func() { os.RemoveAll(dir) }
	if h.upstream, err = startUpstream(); err != nil {
		return cleanup, fmt.Errorf("fake upstream DNS: %w", err)
	}
	cleanup = func() {
		h.upstream.close()
		os.RemoveAll(dir)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		return cleanup, fmt.Errorf("binary dir: %w", err)
	}
	h.bin = filepath.Join(dir, "vrouter")
	if err := copyFile(src, h.bin, 0o755); err != nil {
		return cleanup, fmt.Errorf("copy %s: %w", src, err)
	}
	return cleanup, nil
}

func binaryPath() (string, error) {
	p := *vrouterFlag
	if p == "" {
		p = os.Getenv("VROUTER_BIN")
	}
	if p == "" {
		p = filepath.Join("..", "..", "bin", "vrouter")
	}
	abs, err := filepath.Abs(p)
	if err != nil {
		return "", fmt.Errorf("vrouter binary %q: %w", p, err)
	}
	st, err := os.Stat(abs)
	if err != nil {
		return "", fmt.Errorf("vrouter binary (pass -vrouter=PATH or VROUTER_BIN; run make build): %w", err)
	}
	if !st.Mode().IsRegular() {
		return "", fmt.Errorf("vrouter binary %s is not a regular file", abs)
	}
	return abs, nil
}

func daemonIDs() (uid, gid int, err error) {
	u, err := user.Lookup(daemonUser)
	if err != nil {
		return 0, 0, fmt.Errorf("daemon user: %w", err)
	}
	g, err := user.LookupGroup(daemonGroup)
	if err != nil {
		return 0, 0, fmt.Errorf("daemon group: %w", err)
	}
	if uid, err = strconv.Atoi(u.Uid); err != nil {
		return 0, 0, fmt.Errorf("uid of %s: %w", daemonUser, err)
	}
	if gid, err = strconv.Atoi(g.Gid); err != nil {
		return 0, 0, fmt.Errorf("gid of %s: %w", daemonGroup, err)
	}
	if uid == 0 {
		return 0, 0, fmt.Errorf("user %s has uid 0", daemonUser)
	}
	return uid, gid, nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, mode)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Chmod(dst, mode) // the umask may have narrowed it
}
