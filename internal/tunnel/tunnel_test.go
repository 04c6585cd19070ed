package tunnel

import (
	"errors"
	"io/fs"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func TestInspectNotTUN(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	defer w.Close()
	reg, err := os.Create(filepath.Join(t.TempDir(), "regular"))
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	files := map[string]*os.File{"pipe": r, "regular file": reg, "nil": nil}
	// /dev/net/tun opened but never attached to a device.
	if clone, err := os.OpenFile("/dev/net/tun", os.O_RDWR, 0); err == nil {
		defer clone.Close()
		files["unattached /dev/net/tun"] = clone
	}
	for name, f := range files {
		t.Run(name, func(t *testing.T) {
			if _, err := Inspect(f); !errors.Is(err, ErrNotTUN) {
				t.Fatalf("Inspect = %v, want ErrNotTUN", err)
			}
		})
	}
}

func TestOpenPortNotTUN(t *testing.T) {
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	if _, _, err := OpenPort(r, 1390); !errors.Is(err, ErrNotTUN) {
		t.Fatalf("OpenPort(pipe) = %v, want ErrNotTUN", err)
	}
	// OpenPort owns its argument, also on error.
	if _, err := r.Read(make([]byte, 1)); !errors.Is(err, os.ErrClosed) {
		t.Fatalf("pipe not closed by OpenPort: %v", err)
	}
	if _, _, err := OpenPort(nil, 1390); err == nil {
		t.Fatal("OpenPort(nil) succeeded")
	}
}

func TestNetnsID(t *testing.T) {
	id, err := NetnsID("/proc/self/ns/net")
	if err != nil {
		t.Fatalf("NetnsID(/proc/self/ns/net): %v", err)
	}
	if !regexp.MustCompile(`^netns:\d+:\d+$`).MatchString(id) {
		t.Fatalf("id %q has the wrong form", id)
	}
	// Another path to the same namespace gives the same id.
	id2, err := NetnsID("/proc/thread-self/ns/net")
	if err != nil {
		t.Fatal(err)
	}
	if id != id2 {
		t.Fatalf("ids differ: %q vs %q", id, id2)
	}

	if _, err := NetnsID(filepath.Join(t.TempDir(), "missing")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing path: %v, want fs.ErrNotExist", err)
	}
	reg := filepath.Join(t.TempDir(), "regular")
	if err := os.WriteFile(reg, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := NetnsID(reg); err == nil || !strings.Contains(err.Error(), "not a network namespace") {
		t.Fatalf("regular file: %v", err)
	}
	if _, err := NetnsID("/proc/self/ns/uts"); err == nil || !strings.Contains(err.Error(), "not a network namespace") {
		t.Fatalf("uts namespace: %v", err)
	}
}

func TestCreateInNetnsArgErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing")
	_, err := CreateInNetns(missing, "vr0")
	if !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing netns: %v, want fs.ErrNotExist", err)
	}
	if !strings.Contains(err.Error(), missing) {
		t.Fatalf("message %q does not name the path", err)
	}
	for _, name := range []string{"", "a-name-longer-than-15", "a/b", "a b", "..", "x:1"} {
		if _, err := CreateInNetns("/proc/self/ns/net", name); err == nil {
			t.Fatalf("name %q accepted", name)
		}
	}
	reg := filepath.Join(t.TempDir(), "regular")
	if err := os.WriteFile(reg, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := CreateInNetns(reg, "vr0"); err == nil || !strings.Contains(err.Error(), "not a network namespace") {
		t.Fatalf("regular file as netns: %v", err)
	}
}

func TestConfigureArgErrors(t *testing.T) {
	good := netip.MustParsePrefix("10.240.0.1/22")
	for name, cfg := range map[string]IfaceConfig{
		"no address":   {},
		"ipv6 address": {Addr: netip.MustParsePrefix("fd00::1/64")},
		"bad MTU":      {Addr: good, MTU: 70000},
		"ipv6 route":   {Addr: good, Routes: []netip.Prefix{netip.MustParsePrefix("fd00::/8")}},
	} {
		t.Run(name, func(t *testing.T) {
			if err := Configure("/proc/self/ns/net", "vr0", cfg); err == nil {
				t.Fatal("accepted")
			}
		})
	}
	missing := filepath.Join(t.TempDir(), "missing")
	if err := Configure(missing, "vr0", IfaceConfig{Addr: good}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Configure, missing netns: %v", err)
	}
	if err := Preflight(missing, IfaceConfig{Addr: good}); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("Preflight, missing netns: %v", err)
	}
}
