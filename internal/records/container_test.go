package records

import (
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/vrouter/vrouter/cluster"
)

func TestParseKeys(t *testing.T) {
	for _, tt := range []struct {
		key  string
		pn   string
		addr string
	}{
		{"c/" + testPN + "/10.240.0.1", testPN, "10.240.0.1"},
		{"c/pn-1/10.240.0.1", "", ""},             // not a network id
		{"c/" + testPN + "/10.240.3.255", "", ""}, // not a host address of the range
		{"c/" + testPN + "/192.0.2.1", "", ""},
		{"c/" + testPN + "/x", "", ""},
		{"c/" + testPN + "/0::1", "", ""}, // not how ContainerKey spells ::1
		{"c/" + testPN, "", ""},
		{"n/a/web/1", "", ""},
	} {
		pn, addr, ok := ParseContainerKey(tt.key)
		if ok != (tt.pn != "") || pn != tt.pn || (ok && addr.String() != tt.addr) {
			t.Errorf("ParseContainerKey(%q) = %q, %v, %v", tt.key, pn, addr, ok)
		}
	}
	for _, tt := range []struct {
		key string
		at  string
		n   int
	}{
		{"n/ap-1/web/12", "ap-1/web", 12},
		{"n/ap-1/web/x", "", 0},
		{"n/x", "", 0},
		{"c/pn/10.240.0.1", "", 0},
	} {
		at, n, ok := ParseNumberKey(tt.key)
		if ok != (tt.at != "") || at != tt.at || n != tt.n {
			t.Errorf("ParseNumberKey(%q) = %q, %d, %v", tt.key, at, n, ok)
		}
	}
	if k := NumberKey("ap-1", "web", 12); k != "n/ap-1/web/12" {
		t.Errorf("NumberKey = %q", k)
	}
}

// FuzzParseKeys feeds the key parsers what peers could put in the store.
func FuzzParseKeys(f *testing.F) {
	for _, k := range []string{"c/pn-1/10.240.0.1", "c/pn-1/", "c//1.2.3.4", "c/p/0::1", "c/p/::ffff:10.0.0.1", "n/ap-1/web/3", "n/a/b/c/-1", "n/x", "c/", ""} {
		f.Add(k)
	}
	f.Fuzz(func(t *testing.T, key string) {
		if pn, addr, ok := ParseContainerKey(key); ok {
			if strings.Contains(pn, "/") || key != ContainerKey(pn, addr) {
				t.Fatalf("ParseContainerKey(%q) = %q, %v", key, pn, addr)
			}
		}
		if at, n, ok := ParseNumberKey(key); ok {
			num, found := strings.CutPrefix(key, "n/"+at+"/")
			if m, err := strconv.Atoi(num); !found || strings.Contains(num, "/") || err != nil || m != n {
				t.Fatalf("ParseNumberKey(%q) = %q, %d", key, at, n)
			}
		}
	})
}

func TestContainerCodec(t *testing.T) {
	want := Container{ID: "c-0123456789ab", App: testApp, Type: "web", Number: 3, MTU: 1390, Interface: "eth0", AttachedAt: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}
	b, err := want.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if got, err := DecodeContainer(b); err != nil || got != want {
		t.Fatalf("DecodeContainer = %+v, %v; want %+v", got, err, want)
	}
	if _, err := DecodeContainer([]byte("not json")); err == nil {
		t.Fatal("DecodeContainer accepted garbage")
	}
	for _, bad := range []Container{
		{ID: "c-1", App: "ap-1", Type: "web", Number: 1},
		{ID: "c-1", App: testApp, Type: "Web!", Number: 1},
		{ID: "c-1", App: testApp, Type: "web", Number: 0},
	} {
		b, _ := bad.Encode()
		if _, err := DecodeContainer(b); err == nil {
			t.Errorf("DecodeContainer accepted %+v", bad)
		}
	}

	// The cache decodes each version once and tells bad values apart.
	var cc ContainerCache
	e := cluster.Entry{Key: ContainerKey(testPN, netip.MustParseAddr("10.240.0.1")), Owner: "n1", Version: 1, Value: b}
	if got, ok := cc.Decode(e); !ok || got != want {
		t.Fatalf("Decode = %+v, %v", got, ok)
	}
	e.Value = []byte("changed, same version")
	if got, ok := cc.Decode(e); !ok || got != want {
		t.Fatalf("Decode of a cached version = %+v, %v", got, ok)
	}
	e.Version = 2
	if _, ok := cc.Decode(e); ok {
		t.Fatal("Decode of a new, bad version succeeded")
	}
}

// FuzzContainerRecord: a container record is a peer's bytes; decoding
// never panics, and what decodes survives a round trip.
func FuzzContainerRecord(f *testing.F) {
	b, _ := Container{ID: "c-0123456789ab", App: testApp, Type: "web", Number: 3, MTU: 1390, AttachedAt: time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)}.Encode()
	f.Add(b)
	f.Add([]byte(`{"id":1}`))
	f.Add([]byte(`null`))
	f.Fuzz(func(t *testing.T, value []byte) {
		c, err := DecodeContainer(value)
		if err != nil {
			return
		}
		again, err := c.Encode()
		if err != nil {
			return // e.g. a year outside what RFC 3339 can spell
		}
		c2, err := DecodeContainer(again)
		if err != nil || c2.ID != c.ID || c2.App != c.App || c2.Number != c.Number || !c2.AttachedAt.Equal(c.AttachedAt) {
			t.Fatalf("round trip of %q: %+v, %v; want %+v", value, c2, err, c)
		}
	})
}
