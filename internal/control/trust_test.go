package control

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// listenAt makes a listening unix socket at path, closed at the end of
// the test.
func listenAt(t *testing.T, path string) {
	t.Helper()
	ln, err := net.Listen("unixpacket", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
}

func TestCheckSocket(t *testing.T) {
	me := os.Geteuid()
	private := func(t *testing.T) string {
		dir := filepath.Join(t.TempDir(), "state")
		if err := os.Mkdir(dir, 0o700); err != nil {
			t.Fatal(err)
		}
		return dir
	}

	t.Run("own socket in a private directory", func(t *testing.T) {
		sock := filepath.Join(private(t), "control.sock")
		listenAt(t, sock)
		if err := CheckSocket(sock, me); err != nil {
			t.Fatal(err)
		}
	})
	t.Run("missing: left to the caller", func(t *testing.T) {
		if err := CheckSocket(filepath.Join(private(t), "control.sock"), me); err != nil {
			t.Fatal(err)
		}
	})
	for _, mode := range []os.FileMode{0o777, 0o1777, 0o770, 0o722} {
		t.Run("directory "+mode.String(), func(t *testing.T) {
			dir := private(t)
			sock := filepath.Join(dir, "control.sock")
			listenAt(t, sock)
			if err := os.Chmod(dir, mode); err != nil {
				t.Fatal(err)
			}
			err := CheckSocket(sock, me)
			if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "others may write") {
				t.Fatalf("err = %v, want a refusal of the directory", err)
			}
		})
	}
	t.Run("not a socket", func(t *testing.T) {
		path := filepath.Join(private(t), "control.sock")
		if err := os.WriteFile(path, nil, 0o600); err != nil {
			t.Fatal(err)
		}
		if err := CheckSocket(path, me); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "not a socket") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("symlink to a socket", func(t *testing.T) {
		dir := private(t)
		sock := filepath.Join(dir, "real.sock")
		listenAt(t, sock)
		link := filepath.Join(dir, "control.sock")
		if err := os.Symlink(sock, link); err != nil {
			t.Fatal(err)
		}
		if err := CheckSocket(link, me); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "not a socket") {
			t.Fatalf("err = %v", err)
		}
	})
	t.Run("another user's socket", func(t *testing.T) {
		sock := filepath.Join(private(t), "control.sock")
		listenAt(t, sock)
		if me == 0 {
			t.Skip("the socket is root's, which every client trusts; see the chown cases below")
		}
		// The client is someone else than the socket's (and directory's)
		// owner, and not root.
		err := CheckSocket(sock, me+4242)
		if !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "another user's daemon") {
			t.Fatalf("err = %v", err)
		}
	})
	if me != 0 {
		return // the cases below chown, which needs root
	}
	t.Run("socket of another user than its directory's", func(t *testing.T) {
		dir := private(t)
		sock := filepath.Join(dir, "control.sock")
		listenAt(t, sock)
		if err := os.Lchown(sock, 4242, 4242); err != nil {
			t.Fatal(err)
		}
		if err := CheckSocket(sock, 0); !errors.Is(err, ErrUntrusted) || !strings.Contains(err.Error(), "not the daemon's own socket") {
			t.Fatalf("err = %v", err)
		}
		// As that user, too: the directory is root's.
		if err := CheckSocket(sock, 4242); err == nil {
			t.Fatal("no error for uid 4242")
		}
	})
	t.Run("root trusts a daemon user's own directory", func(t *testing.T) {
		dir := private(t)
		sock := filepath.Join(dir, "control.sock")
		listenAt(t, sock)
		for _, p := range []string{dir, sock} {
			if err := os.Lchown(p, 4242, 4242); err != nil {
				t.Fatal(err)
			}
		}
		if err := CheckSocket(sock, 0); err != nil {
			t.Fatalf("root: %v", err)
		}
		if err := CheckSocket(sock, 4242); err != nil {
			t.Fatalf("the daemon's user: %v", err)
		}
		if err := CheckSocket(sock, 4343); err == nil {
			t.Fatal("a third user: no error")
		}
	})
}
