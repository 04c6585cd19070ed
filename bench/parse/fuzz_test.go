package parse

import "testing"

// The parsers read other programs' output: whatever the bytes, they return
// a value or an error and never panic.

func FuzzParseIperf(f *testing.F) {
	for _, s := range []string{iperfTCP, iperfUDP, iperfUDPOld, `{"error":"x"}`, `{}`, `[]`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseIperf(b)
		if err == nil && r.Seconds <= 0 {
			t.Fatalf("accepted a report of %v seconds", r.Seconds)
		}
	})
}

func FuzzParseSockperf(f *testing.F) {
	f.Add([]byte(sockperfOut))
	f.Add([]byte("---> percentile 50.000 = 1e400\navg-rtt=1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		s, err := ParseSockperf(b)
		if err == nil && len(s.Percentiles) == 0 {
			t.Fatal("accepted output without percentiles")
		}
	})
}

func FuzzParseGoBench(f *testing.F) {
	f.Add([]byte(goBenchOut))
	f.Add([]byte("Benchmark-1 1 1 x\nBenchmark- 2\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		bs, err := ParseGoBench(b)
		if err != nil {
			return
		}
		for _, x := range bs {
			if x.Metrics == nil || x.Procs < 1 {
				t.Fatalf("result %+v", x)
			}
		}
	})
}
