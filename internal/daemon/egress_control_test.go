package daemon

import (
	"encoding/json"
	"testing"

	"github.com/vrouter/vrouter/internal/control"
)

// TestEgressRequestValidation: bad egress and gateway requests get
// "invalid" or "not_found" from a single node.
func TestEgressRequestValidation(t *testing.T) {
	td := startDaemon(t)
	for _, tc := range []struct {
		action, app string
		code        control.Code
	}{
		{"enable", "", "invalid"},
		{"disable", "", "invalid"},
		{"enable", "ap-1", "invalid"},
		{"show", "ap-1", "invalid"},
		{"frob", egressAppA, "invalid"},
		{"disable", egressAppA, "not_found"},
		{"show", egressAppA, "not_found"},
		{"enable", egressAppA, "unavailable"},
	} {
		if _, err := td.egressCall(t, tc.action, tc.app); errCode(err) != tc.code {
			t.Errorf("egress %s %q: %v, want code %s", tc.action, tc.app, err, tc.code)
		}
	}
	if rows := td.showRows(t); len(rows) != 0 {
		t.Errorf("show = %v, want none", rows)
	}
	var raw json.RawMessage
	if err := td.call(t, &control.Request{Op: "egress", Egress: &control.EgressRequest{Action: "show"}}, false, &raw); err != nil || string(raw) != "[]" {
		t.Errorf("show JSON = %s, %v; want []", raw, err)
	}
	if _, err := td.gatewayCall(t, "drain"); errCode(err) != "invalid" {
		t.Errorf("drain on a worker: %v, want invalid", err)
	}
	if _, err := td.gatewayCall(t, "maintain"); errCode(err) != "invalid" {
		t.Errorf("unknown gateway action: %v, want invalid", err)
	}
	if td.egressTargets(egressAppA) != nil || len(td.localEgress()) != 0 {
		t.Errorf("a node without assignments has targets or local egress")
	}
}
