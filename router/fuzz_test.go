package router

import (
	"bytes"
	"testing"

	"gvisor.dev/gvisor/pkg/tcpip/header"
)

func fuzzSeeds(f *testing.F) {
	icmp := uint8(header.ICMPv4ProtocolNumber)
	for _, s := range [][]byte{
		UDP4("10.240.0.1", "10.240.0.2"),
		UDP4("10.240.0.1", "10.240.0.3"),
		UDP4("10.240.0.1", "10.240.0.9"),
		UDP4("10.240.0.1", "169.254.20.10"),
		UDP4("10.240.0.1", "10.240.3.255"),
		UDP4("10.240.0.5", "10.240.0.2"),
		Pkt4("10.240.0.1", "10.240.0.3", PktOpts{Payload: 700, DF: true}),
		Pkt4("10.240.0.1", "10.240.0.9", PktOpts{Proto: icmp, ICMPType: header.ICMPv4Echo, Payload: 56}),
		Pkt4("10.240.0.1", "10.240.0.9", PktOpts{Proto: icmp, ICMPType: header.ICMPv4DstUnreachable, Payload: 28}),
		Pkt4("10.240.0.1", "10.240.0.9", PktOpts{FragOff: 3}),
		IPv6Pkt(),
		{0x45},
		{0x4f, 0, 0, 20},
		{},
	} {
		f.Add(s)
	}
}

// FuzzParseIPv4 checks that the parser never panics and that what it
// accepts is consistent with the bytes.
func FuzzParseIPv4(f *testing.F) {
	fuzzSeeds(f)
	f.Fuzz(func(t *testing.T, b []byte) {
		p, reason, ok := parseIPv4(b)
		if !ok {
			if reason != dropMalformed && reason != dropNotIPv4 {
				t.Fatalf("unexpected reason %d", reason)
			}
			return
		}
		if b[0]>>4 != 4 {
			t.Fatalf("accepted version %d", b[0]>>4)
		}
		hl := int(p.hdr.HeaderLength())
		if hl < header.IPv4MinimumSize || hl > p.totalLen() || p.totalLen() > len(b) {
			t.Fatalf("accepted header length %d, total %d, buffer %d", hl, p.totalLen(), len(b))
		}
		if !bytes.Equal(p.src[:], b[12:16]) || !bytes.Equal(p.dst[:], b[16:20]) {
			t.Fatal("addresses differ from the header")
		}
		p.mayTriggerICMPError()
		p.dontFragment()
	})
}

// FuzzForward feeds arbitrary bytes as packets from a port through
// forward: it must never panic, and every packet must end up forwarded or
// under exactly one drop reason.
func FuzzForward(f *testing.F) {
	fuzzSeeds(f)
	r := New(Config{})
	a := attachNoLoop(f, r, newFakePort(2, false), 1, "10.240.0.1", 1390)
	attachNoLoop(f, r, newFakePort(2, false), 1, "10.240.0.2", 1390)
	attachNoLoop(f, r, newFakePort(2, false), 1, "10.240.0.3", 576)
	f.Cleanup(func() { r.Close() })
	f.Fuzz(func(t *testing.T, b []byte) {
		before := r.Stats()
		// The packet alone, then twice in one batch (grouping).
		a.forward(load(a, b), r.now())
		a.forward(load(a, b, b), r.now())
		after := r.Stats()
		var drops uint64
		for k, v := range after.Drops {
			drops += v - before.Drops[k]
		}
		rx := after.Counters["rx_packets"] - before.Counters["rx_packets"]
		fwd := after.Counters["forwarded"] - before.Counters["forwarded"]
		if rx != 3 || fwd+drops != rx {
			t.Fatalf("rx %d, forwarded %d + drops %d do not add up", rx, fwd, drops)
		}
	})
}
