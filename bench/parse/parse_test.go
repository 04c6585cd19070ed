package parse

import (
	"math"
	"strings"
	"testing"
)

const iperfTCP = `{"start":{"test_start":{"protocol":"TCP","num_streams":4}},
"end":{"sum_sent":{"seconds":10.0,"bits_per_second":2.5e9,"retransmits":12},
"sum_received":{"seconds":10.04,"bits_per_second":2.4e9},
"cpu_utilization_percent":{"host_total":80.5,"remote_total":60.25}}}`

// iperf 3.12's UDP report, trimmed to what matters.
const iperfUDP = `{"start":{"test_start":{"protocol":"UDP","num_streams":1}},
"end":{"sum":{"seconds":1.000155,"bits_per_second":106060935.1,"lost_packets":4222,"packets":207160,"lost_percent":2.03},
"sum_sent":{"seconds":1.000047,"bits_per_second":106060935.1,"packets":207160},
"sum_received":{"seconds":1.0,"bits_per_second":103884057.9,"lost_packets":4222,"packets":207152,"lost_percent":2.038},
"cpu_utilization_percent":{"host_total":98.1,"remote_total":88.8}}}`

const iperfUDPOld = `{"start":{"test_start":{"protocol":"UDP","num_streams":1}},
"end":{"sum":{"seconds":2,"bits_per_second":1e6,"lost_packets":0,"packets":1000,"lost_percent":0}}}`

func TestParseIperf(t *testing.T) {
	tcp, err := ParseIperf([]byte(iperfTCP))
	if err != nil {
		t.Fatal(err)
	}
	if tcp.Protocol != "TCP" || tcp.Streams != 4 || tcp.ReceivedBps != 2.4e9 || tcp.SentBps != 2.5e9 ||
		tcp.Retransmits != 12 || tcp.Seconds != 10.04 || tcp.HostCPU != 80.5 || tcp.RemoteCPU != 60.25 {
		t.Errorf("TCP = %+v", tcp)
	}

	udp, err := ParseIperf([]byte(iperfUDP))
	if err != nil {
		t.Fatal(err)
	}
	if udp.Packets != 207152 || udp.LostPackets != 4222 || math.Abs(udp.ReceivedPPS-202930) > 1e-6 {
		t.Errorf("UDP = %+v", udp)
	}
	old, err := ParseIperf([]byte(iperfUDPOld))
	if err != nil {
		t.Fatal(err)
	}
	if old.ReceivedPPS != 500 {
		t.Errorf("UDP from end.sum: pps %v, want 500", old.ReceivedPPS)
	}

	for _, tt := range []struct{ name, in, want string }{
		{"iperf error", `{"start":{},"end":{},"error":"unable to connect to server: Connection refused"}`, "Connection refused"},
		{"not JSON", `iperf3: error`, "iperf3 JSON"},
		{"TCP without sums", `{"start":{"test_start":{"protocol":"TCP"}},"end":{}}`, "sum_sent"},
		{"unknown protocol", `{"start":{"test_start":{"protocol":"SCTP"}},"end":{}}`, "unknown protocol"},
		{"zero duration", `{"start":{"test_start":{"protocol":"TCP"}},"end":{"sum_sent":{},"sum_received":{}}}`, "no duration"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseIperf([]byte(tt.in))
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("err = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

// The end of a real sockperf 3.7 ping-pong --full-rtt run, colour and all.
const sockperfOut = "sockperf: \x1b[2;35m====> avg-rtt=31.878 (std-dev=23.738)\x1b[0m\n" +
	"sockperf: # dropped messages = 0; # duplicated messages = 0; # out-of-order messages = 0\n" +
	"sockperf: Summary: Round trip is 31.878 usec\n" +
	"sockperf: \x1b[2;35mTotal 48590 observations\x1b[0m; each percentile contains 485.90 observations\n" +
	"sockperf: ---> <MAX> observation = 3052.314\n" +
	"sockperf: ---> percentile 99.999 = 3052.314\n" +
	"sockperf: ---> percentile 99.000 =   77.215\n" +
	"sockperf: ---> percentile 50.000 =   29.235\n" +
	"sockperf: ---> <MIN> observation =   17.653\n"

func TestParseSockperf(t *testing.T) {
	s, err := ParseSockperf([]byte(sockperfOut))
	if err != nil {
		t.Fatal(err)
	}
	p50, ok50 := s.P(50)
	p99, ok99 := s.P(99)
	if !s.FullRTT || s.Avg != 31.878 || s.Observations != 48590 || s.Min != 17.653 || s.Max != 3052.314 ||
		!ok50 || !ok99 || p50 != 29.235 || p99 != 77.215 {
		t.Errorf("ParseSockperf = %+v", s)
	}
	half, err := ParseSockperf([]byte("sockperf: ====> avg-lat= 15.9 (std-dev=1)\nsockperf: ---> percentile 50.000 = 14.6\n"))
	if err != nil || half.FullRTT || half.Avg != 15.9 {
		t.Errorf("half-RTT output: %+v, %v", half, err)
	}
	for _, in := range []string{"", "sockperf: Test ended\n", "sockperf: ====> avg-rtt=31.8\n"} {
		if _, err := ParseSockperf([]byte(in)); err == nil {
			t.Errorf("ParseSockperf(%q) accepted output without a summary", in)
		}
	}
}

const goBenchOut = `goos: linux
goarch: amd64
pkg: github.com/vrouter/vrouter/router
cpu: AMD EPYC
BenchmarkForward/batch=1-2         	 1000000	       212.5 ns/op	6588.24 MB/s	   4705882 pkts/s	       0 B/op	       0 allocs/op
BenchmarkForward/batch=128-2       	   10000	     15000 ns/op	       3 allocs/op
BenchmarkNoProcs 	 100	 5 ns/op
BenchmarkBroken
--- FAIL: BenchmarkBroken
PASS
ok  	github.com/vrouter/vrouter/router	3.1s
pkg: github.com/vrouter/vrouter/dns
BenchmarkLocalQuery/pack-2 	  50000	  2400 ns/op	 512 B/op	 9 allocs/op
`

func TestParseGoBench(t *testing.T) {
	bs, err := ParseGoBench([]byte(goBenchOut))
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 4 {
		t.Fatalf("got %d results, want 4: %+v", len(bs), bs)
	}
	b := bs[0]
	if b.Pkg != "github.com/vrouter/vrouter/router" || b.Name != "BenchmarkForward/batch=1" || b.Procs != 2 ||
		b.N != 1000000 || b.Metrics["ns/op"] != 212.5 || b.Metrics["pkts/s"] != 4705882 || b.Metrics["allocs/op"] != 0 {
		t.Errorf("first result %+v", b)
	}
	if bs[2].Name != "BenchmarkNoProcs" || bs[2].Procs != 1 {
		t.Errorf("result without -procs suffix: %+v", bs[2])
	}
	if bs[3].Pkg != "github.com/vrouter/vrouter/dns" || bs[3].Metrics["allocs/op"] != 9 {
		t.Errorf("last result %+v", bs[3])
	}
	if _, err := ParseGoBench([]byte("BenchmarkX-2 10 5 ns/op 7\n")); err == nil {
		t.Error("a result line with an unpaired value was accepted")
	}
	if _, err := ParseGoBench([]byte("BenchmarkX-2 10 fast ns/op\n")); err == nil {
		t.Error("a result line with a non-numeric value was accepted")
	}
}
