//go:build e2e

package e2e

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestControlSocketPeerCredentials: the daemon (as nobody) serves root and
// its own user; another user who reaches the socket (here: it was made
// world-writable on purpose) is refused with a clear error, by the peer's
// credentials, not only by the socket's mode.
func TestControlSocketPeerCredentials(t *testing.T) {
	need(t)
	d := startDaemon(t)
	// Root (this test) is served.
	d.mustCLI(t, "status")
	if err := os.Chmod(filepath.Dir(d.sock), 0o711); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d.sock, 0o666); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), cmdTimeout)
	defer cancel()
	out, err := exec.CommandContext(ctx, "setpriv", "--reuid=daemon", "--regid=daemon", "--clear-groups",
		h.bin, "status", "--control", d.sock).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "may not use this control socket") {
		t.Fatalf("status as another user: %v\n%s", err, out)
	}
	if d.exited() {
		t.Fatal("the daemon exited")
	}
	d.mustCLI(t, "status")
}
