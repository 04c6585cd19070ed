package records

import (
	"encoding/json"
	"net/netip"
	"strings"
	"testing"
	"time"
)

const egressAppA = "ap-00000000-0000-4000-8000-00000000000a"

var assignT0 = time.Date(2025, 1, 1, 0, 0, 0, 0, time.UTC)

func TestParseEgressRecords(t *testing.T) {
	good, _ := EIP{App: egressAppA, AssignedAt: assignT0}.Encode()
	if ip, rec, err := ParseEIP("eip/127.0.0.2", good); err != nil || ip != netip.MustParseAddr("127.0.0.2") || rec.App != egressAppA || !rec.AssignedAt.Equal(assignT0) {
		t.Fatalf("ParseEIP = %v %+v %v", ip, rec, err)
	}
	if k := EIPKey(netip.MustParseAddr("127.0.0.2")); k != "eip/127.0.0.2" {
		t.Fatalf("EIPKey = %q", k)
	}
	for _, tc := range []struct{ key, value string }{
		{"eip/127.0.0.2", `{"app":"ap-1","assigned_at":"2025-01-01T00:00:00Z"}`},
		{"eip/127.0.0.2", `{"app":"` + egressAppA + `"}`},
		{"eip/::1", string(good)},
		{"eip/banana", string(good)},
		{"xip/127.0.0.2", string(good)},
		{"eip/127.0.0.2", `[]`},
	} {
		if _, _, err := ParseEIP(tc.key, []byte(tc.value)); err == nil {
			t.Errorf("ParseEIP(%q, %q) accepted", tc.key, tc.value)
		}
	}

	req, _ := EgressRequest{Action: ActionEnable, ID: "x", IPs: []EgressPick{{netip.MustParseAddr("127.0.0.2"), "g1"}}}.Encode()
	if app, r, err := ParseEgressRequest(EgressRequestKey(egressAppA), req); err != nil || app != egressAppA || len(r.IPs) != 1 || r.IPs[0].Gateway != "g1" {
		t.Fatalf("ParseEgressRequest = %q %+v %v", app, r, err)
	}
	for _, tc := range []struct{ key, value string }{
		{"ereq/ap-1", string(req)},
		{"eip/" + egressAppA, string(req)},
		{EgressRequestKey(egressAppA), `{"action":"steal","id":"x"}`},
		{EgressRequestKey(egressAppA), `{"action":"enable","id":"x","ips":[{"ip":"127.0.0.2","gateway":""}]}`},
		{EgressRequestKey(egressAppA), `{"action":"enable","id":"x","ips":[{"ip":"","gateway":"g"}]}`},
		{EgressRequestKey(egressAppA), `{"action":"enable","ips":[` + strings.Repeat(`{"ip":"127.0.0.2","gateway":"g"},`, MaxRequestIPs) + `{"ip":"127.0.0.2","gateway":"g"}]}`},
	} {
		if _, _, err := ParseEgressRequest(tc.key, []byte(tc.value)); err == nil {
			t.Errorf("ParseEgressRequest(%q, %q) accepted", tc.key, tc.value)
		}
	}
}

// FuzzEgressRecords: records of peers are outside bytes; their decoders
// never panic, and what they accept is what they promise.
func FuzzEgressRecords(f *testing.F) {
	f.Add("eip/127.0.0.2", []byte(`{"app":"`+egressAppA+`","assigned_at":"2025-01-01T00:00:00Z"}`))
	f.Add("ereq/"+egressAppA, []byte(`{"action":"enable","id":"1","ips":[{"ip":"127.0.0.2","gateway":"g1"}]}`))
	f.Add("ereq/"+egressAppA, []byte(`{"action":"disable","id":"1"}`))
	f.Fuzz(func(t *testing.T, key string, value []byte) {
		if ip, rec, err := ParseEIP(key, value); err == nil {
			if !ip.Is4() || rec.AssignedAt.IsZero() || key != EIPKey(ip) {
				t.Fatalf("ParseEIP(%q, %q) accepted %v %+v", key, value, ip, rec)
			}
		}
		if app, req, err := ParseEgressRequest(key, value); err == nil {
			if key != EgressRequestKey(app) || (req.Action != ActionEnable && req.Action != ActionDisable) || len(req.IPs) > MaxRequestIPs {
				t.Fatalf("ParseEgressRequest(%q, %q) accepted %q %+v", key, value, app, req)
			}
			for _, p := range req.IPs {
				if !p.IP.Is4() || p.Gateway == "" {
					t.Fatalf("ParseEgressRequest(%q, %q) accepted pick %+v", key, value, p)
				}
			}
			if _, err := json.Marshal(req); err != nil {
				t.Fatalf("accepted request does not encode: %v", err)
			}
		}
	})
}
