package harness

import (
	"testing"
	"time"
)

func TestLongestGap(t *testing.T) {
	out := `PING 10.240.0.2 (10.240.0.2) 56(84) bytes of data.
[1764770000.000000] 64 bytes from 10.240.0.2: icmp_seq=1 ttl=64 time=0.2 ms
[1764770000.010000] 64 bytes from 10.240.0.2: icmp_seq=2 ttl=64 time=0.2 ms
[1764770000.075000] 64 bytes from 10.240.0.2: icmp_seq=3 ttl=64 time=0.2 ms
[1764770000.085000] 64 bytes from 10.240.0.2: icmp_seq=9 ttl=64 time=0.2 ms
--- 10.240.0.2 ping statistics ---
`
	g, err := longestGap(out)
	if err != nil {
		t.Fatal(err)
	}
	if d := g - 65*time.Millisecond; d < -time.Millisecond || d > time.Millisecond {
		t.Fatalf("gap %v, want 65ms", g)
	}
	if _, err := longestGap("[1764770000.000000] 64 bytes from 10.240.0.2: icmp_seq=1\n"); err == nil {
		t.Fatal("one reply gave a gap")
	}
}
