package harness

import (
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/leaktest"
)

func startTestSrcServer(t *testing.T) *srcServer {
	t.Helper()
	srv, err := startSrcServer()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := srv.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
			t.Errorf("close source server: %v", err)
		}
	})
	return srv
}

func TestSrcServer(t *testing.T) {
	leaktest.Check(t)
	srv := startTestSrcServer(t)
	// The host's namespace (nil): what the scenarios do in a container's.
	src, err := seenFrom(nil, srv.Addr(), 2*time.Second)
	if err != nil || src != "127.0.0.1" {
		t.Fatalf("seenFrom = %q, %v; want 127.0.0.1", src, err)
	}
	// A held connection echoes, and Close ends it.
	c, src, err := dialSource(srv.Addr(), 2*time.Second)
	if err != nil || src != "127.0.0.1" {
		t.Fatalf("dialSource = %q, %v", src, err)
	}
	defer c.Close()
	for range 3 {
		if err := echoes(c, 2*time.Second); err != nil {
			t.Fatalf("held connection: %v", err)
		}
	}
	if err := srv.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadAll(c); err != nil {
		t.Fatalf("the server's Close did not end the held connection: %v", err)
	}
	if _, _, err := dialSource(srv.Addr(), time.Second); err == nil {
		t.Fatal("connected to a closed source server")
	}
	if err := srv.Close(); !errors.Is(err, net.ErrClosed) {
		t.Errorf("second Close = %v, want net.ErrClosed", err)
	}
}

func TestReadSrcLine(t *testing.T) {
	long := strings.Repeat("1", maxSrcLine+1) + "\n"
	for _, tc := range []struct {
		in, want string
		ok       bool
	}{
		{"127.0.0.2\n", "127.0.0.2", true},
		{"127.0.0.3\nrest", "127.0.0.3", true},
		{"127.0.0.2", "", false}, // no newline before EOF
		{"", "", false},
		{"\n", "", false},
		{long, "", false},
	} {
		got, err := readSrcLine(strings.NewReader(tc.in))
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("readSrcLine(%q) = %q, %v; want %q, ok %v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func FuzzReadSrcLine(f *testing.F) {
	f.Add([]byte("127.0.0.2\n"))
	f.Add([]byte("\n\n"))
	f.Add([]byte(strings.Repeat("x", 100)))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := readSrcLine(strings.NewReader(string(b)))
		if err == nil && (s == "" || len(s) > maxSrcLine || strings.Contains(s, "\n")) {
			t.Fatalf("readSrcLine(%q) = %q without error", b, s)
		}
	})
}

func TestCheckAssignment(t *testing.T) {
	cl := &gwCluster{gws: []*gateway{
		{d: &daemon{name: "g1"}, ip: egressIPs[0]},
		{d: &daemon{name: "g2"}, ip: egressIPs[1]},
	}}
	mk := func(pairs ...string) egressApp {
		var a egressApp
		for i := 0; i+1 < len(pairs); i += 2 {
			a.IPs = append(a.IPs, struct {
				IP      string `json:"ip"`
				Gateway string `json:"gateway"`
				Health  string `json:"health"`
				Active  bool   `json:"active"`
				Primary bool   `json:"primary"`
			}{IP: pairs[i], Gateway: pairs[i+1]})
		}
		return a
	}
	for _, tc := range []struct {
		name string
		app  egressApp
		ok   bool
	}{
		{"both, any order", mk("127.0.0.3", "g2", "127.0.0.2", "g1"), true},
		{"one gateway only", mk("127.0.0.2", "g1"), false},
		{"IP on the wrong gateway", mk("127.0.0.2", "g2", "127.0.0.3", "g1"), false},
		{"foreign IP", mk("127.0.0.2", "g1", "127.0.0.9", "g2"), false},
		{"same IP twice", mk("127.0.0.2", "g1", "127.0.0.2", "g1"), false},
	} {
		if err := checkAssignment(tc.app, cl); (err == nil) != tc.ok {
			t.Errorf("%s: checkAssignment = %v, want ok %v", tc.name, err, tc.ok)
		}
	}
	if cl.gatewayOf("127.0.0.3").d.name != "g2" || cl.gatewayOf("127.0.0.1") != nil {
		t.Error("gatewayOf")
	}
}
