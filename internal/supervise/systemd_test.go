package supervise

import (
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/internal/control"
)

// fakeSystemd is a NOTIFY_SOCKET that records what the daemon sends.
type fakeSystemd struct {
	c *net.UnixConn
}

func newFakeSystemd(t *testing.T) *fakeSystemd {
	t.Helper()
	path := filepath.Join(t.TempDir(), "notify")
	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	t.Setenv("NOTIFY_SOCKET", path)
	return &fakeSystemd{c: c}
}

// next returns the next message and the fd it carried, if any.
func (s *fakeSystemd) next(t *testing.T) (string, *os.File) {
	t.Helper()
	buf, oob := make([]byte, 4096), make([]byte, unix.CmsgSpace(4*4))
	n, oobn, _, _, err := s.c.ReadMsgUnix(buf, oob)
	if err != nil {
		t.Fatal(err)
	}
	var f *os.File
	if oobn > 0 {
		cms, err := unix.ParseSocketControlMessage(oob[:oobn])
		if err != nil {
			t.Fatal(err)
		}
		fds, err := unix.ParseUnixRights(&cms[0])
		if err != nil || len(fds) != 1 {
			t.Fatalf("rights %v %v", fds, err)
		}
		f = os.NewFile(uintptr(fds[0]), "stored")
	}
	return string(buf[:n]), f
}

func TestFDStoreHoldRelease(t *testing.T) {
	sd := newFakeSystemd(t)
	dir := t.TempDir()
	st := NewFDStore(dir, nil)
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	p := Port{Container: control.Container{ID: "c-0123456789ab", IP: "10.240.0.5"}, VNI: 77}
	if err := st.Hold(p, w); err != nil {
		t.Fatal(err)
	}
	w.Close()
	msg, f := sd.next(t)
	if msg != "FDSTORE=1\nFDNAME=c-0123456789ab" || f == nil {
		t.Fatalf("hold sent %q (fd %v)", msg, f)
	}
	// The stored fd is the port's own: it writes into the same pipe.
	if _, err := f.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	f.Close()
	b := make([]byte, 1)
	if _, err := io.ReadFull(r, b); err != nil || b[0] != 'x' {
		t.Fatalf("read %q %v", b, err)
	}
	if ps, _ := ReadJournal(dir); len(ps) != 1 || ps[0].ID != p.ID || ps[0].VNI != 77 {
		t.Fatalf("journal after hold: %+v", ps)
	}
	if err := st.Hold(Port{Container: control.Container{ID: "bad:name"}}, r); err == nil {
		t.Fatal("an FDNAME with a colon was accepted")
	}
	if err := st.Release(p.ID); err != nil {
		t.Fatal(err)
	}
	if msg, f := sd.next(t); msg != "FDSTOREREMOVE=1\nFDNAME=c-0123456789ab" || f != nil {
		t.Fatalf("release sent %q (fd %v)", msg, f)
	}
	if ps, _ := ReadJournal(dir); len(ps) != 0 {
		t.Fatalf("journal after release: %+v", ps)
	}
	if err := Ready(); err != nil {
		t.Fatal(err)
	}
	if msg, _ := sd.next(t); msg != "READY=1" {
		t.Fatalf("ready sent %q", msg)
	}
}

// Reconcile keeps the ports whose fd came back, reports journalled ports
// without one, and closes (and removes from the store) fds it has no
// journal entry for.
func TestReconcile(t *testing.T) {
	sd := newFakeSystemd(t)
	dir := t.TempDir()
	kept := Port{Container: control.Container{ID: "c-kept", IP: "10.240.0.1"}}
	lost := Port{Container: control.Container{ID: "c-lost", IP: "10.240.0.2"}}
	if err := WriteJournal(dir, []Port{kept, lost}); err != nil {
		t.Fatal(err)
	}
	named := func(name string) (*os.File, *os.File) {
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { r.Close() })
		// The same fd under the name systemd gives it (w is dropped
		// without Close: the named file owns the fd now).
		fd, err := unix.Dup(int(w.Fd()))
		if err != nil {
			t.Fatal(err)
		}
		w.Close()
		return r, os.NewFile(uintptr(fd), name)
	}
	_, fKept := named("c-kept")
	rStray, fStray := named("c-stray")
	restore, dropped, strays, err := Reconcile(dir, []*os.File{fKept, fStray})
	if err != nil {
		t.Fatal(err)
	}
	if len(restore) != 1 || restore[0].Port.ID != "c-kept" || restore[0].File != fKept {
		t.Fatalf("restore %+v", restore)
	}
	if len(dropped) != 1 || dropped[0].ID != "c-lost" {
		t.Fatalf("dropped %+v", dropped)
	}
	if len(strays) != 1 || strays[0] != "c-stray" {
		t.Fatalf("strays %v", strays)
	}
	if msg, _ := sd.next(t); msg != "FDSTOREREMOVE=1\nFDNAME=c-stray" {
		t.Fatalf("stray: sent %q", msg)
	}
	// The stray's fd is closed: its pipe reads EOF.
	if n, err := rStray.Read(make([]byte, 1)); n != 0 || err != io.EOF {
		t.Fatalf("stray fd still open: %d %v", n, err)
	}
	if ps, _ := ReadJournal(dir); len(ps) != 1 || ps[0].ID != "c-kept" {
		t.Fatalf("journal %+v", ps)
	}
	restore[0].File.Close()
}
