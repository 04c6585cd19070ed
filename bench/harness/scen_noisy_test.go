package harness

import (
	"encoding/json"
	"testing"

	"github.com/vrouter/vrouter/bench/loadgen"
)

func TestSummarizeFlood(t *testing.T) {
	b, err := json.Marshal(loadgen.FloodResult{Mode: loadgen.FloodTCPHold, Attempts: 10, Established: 7, Refused: 3})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := summarizeFlood(string(b)), "attempts=10 established=7 refused=3 errors=0"; got != want {
		t.Errorf("summarizeFlood(tcp) = %q, want %q", got, want)
	}
	b, err = json.Marshal(loadgen.Result{Kind: "dns", Sent: 5, Completed: 4, Rcodes: map[string]uint64{"NOERROR": 4}})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := summarizeFlood(string(b)), `timeouts=0 sent=5 completed=4 errors=0 per_second=0 rcodes={"NOERROR":4}`; got != want {
		t.Errorf("summarizeFlood(dns) = %q, want %q", got, want)
	}
	iperf := "[ ID] Interval Transfer\n[  5]   0.00-3.00  sec  10 MBytes  28 Mbits/sec  0.01 ms  0/1000 (0%)  sender\n\niperf3: interrupt"
	if got, want := summarizeFlood(iperf), "[ 5] 0.00-3.00 sec 10 MBytes 28 Mbits/sec 0.01 ms 0/1000 (0%) sender"; got != want {
		t.Errorf("summarizeFlood(iperf3) = %q, want %q", got, want)
	}
	// A tool that died: its last lines.
	if got, want := summarizeFlood("a\nb\nc"), "b | c"; got != want {
		t.Errorf("summarizeFlood(text) = %q, want %q", got, want)
	}
}

func TestFloodSetName(t *testing.T) {
	if got := floodSetName(allFloods); got != "all (tcp, udp, dns, peer)" {
		t.Errorf("all: %q", got)
	}
	if got := floodSetName([]string{floodDNS}); got != "dns" {
		t.Errorf("one: %q", got)
	}
}
