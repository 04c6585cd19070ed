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
	// The CLI of another user refuses a socket it does not trust before
	// it sends anything...
	out, err := exec.CommandContext(ctx, "setpriv", "--reuid=daemon", "--regid=daemon", "--clear-groups",
		h.bin, "status", "--control", d.sock).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "is owned by uid") {
		t.Fatalf("CLI status as another user: %v\n%s", err, out)
	}
	// ...and the daemon refuses such a user by its credentials too, for
	// a client that skips that check: a bare SOCK_SEQPACKET request.
	raw := `import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
s.settimeout(10)
s.connect(sys.argv[1])
s.send(b'{"version":1,"op":"status"}')
print(s.recv(65536).decode())`
	out, err = exec.CommandContext(ctx, "setpriv", "--reuid=daemon", "--regid=daemon", "--clear-groups",
		"/usr/bin/python3", "-c", raw, d.sock).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "may not use this control socket") || !strings.Contains(string(out), "forbidden") {
		t.Fatalf("raw status request as another user: %v\n%s", err, out)
	}
	if d.exited() {
		t.Fatal("the daemon exited")
	}
	d.mustCLI(t, "status")
}
