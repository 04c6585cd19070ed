package daemon

import (
	"io"
	"log/slog"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/leaktest"
)

func TestDebugServerServesProfilesAndCloses(t *testing.T) {
	leaktest.Check(t)
	d, err := startDebug(netip.MustParseAddrPort("127.0.0.1:0"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + d.ln.Addr().String() + "/debug/pprof/heap?debug=1"
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		d.Close()
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	c.CloseIdleConnections()
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), "heap profile") {
		t.Errorf("GET heap: %d %.80q", resp.StatusCode, body)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Get(url); err == nil {
		t.Error("profiler still answers after Close")
	}
}
