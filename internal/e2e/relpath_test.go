//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestRelativePaths: `run --state-dir state --control state/control.sock`
// keeps its state where the working directory says, and shows the absolute
// paths (the running line, status --json); a client given a relative
// --control from the same directory reaches it.
func TestRelativePaths(t *testing.T) {
	need(t)
	dir := newStateDir(t) // the daemon's working directory
	d := launchDaemon(t, dir, "--state-dir", "state", "--control", "state/control.sock")
	d.sock = filepath.Join(dir, "state", "control.sock")
	d.waitRunning(t)
	log := d.log.String()
	for _, want := range []string{"control=" + d.sock, "state_dir=" + filepath.Join(dir, "state")} {
		if !strings.Contains(log, want) {
			t.Errorf("log does not say %s:\n%s", want, log)
		}
	}

	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, h.bin, "status", "--json", "--control", "state/control.sock")
	cmd.Dir = dir
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("status with a relative --control from %s: %v\n%s", dir, err, out)
	}
	var st struct {
		Control string `json:"control"`
	}
	if err := json.Unmarshal(out, &st); err != nil {
		t.Fatalf("status --json: %v: %s", err, out)
	}
	if st.Control != d.sock {
		t.Errorf("status --json control %q, want %q", st.Control, d.sock)
	}
	// The same relative path from elsewhere names another socket, and
	// the error says which one.
	cmd = exec.CommandContext(ctx, h.bin, "status", "--control", "state/control.sock")
	cmd.Dir = t.TempDir()
	out, err = cmd.CombinedOutput()
	if err == nil || !strings.Contains(string(out), filepath.Join(cmd.Dir, "state", "control.sock")) {
		t.Errorf("status from %s: %v, want an error naming the absolute socket: %s", cmd.Dir, err, out)
	}
}
