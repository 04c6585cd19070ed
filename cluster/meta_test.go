package cluster

import (
	"bytes"
	"errors"
	"net/netip"
	"reflect"
	"testing"
)

func fullMeta(nEgress int) NodeMeta {
	m := NodeMeta{
		BootID:     0x0102030405060708,
		WGEndpoint: netip.MustParseAddrPort("[2001:db8::1]:51820"),
		Overlay:    netip.MustParseAddr("10.99.0.3"),
		Gateway:    true,
		Draining:   true,
		Started:    1_700_000_000_123_456_789,
	}
	for i := range m.SigningKey {
		m.SigningKey[i] = byte(0x80 + i)
	}
	for i := range m.Signature {
		m.Signature[i] = byte(0x40 + i)
	}
	for i := range m.WGPublicKey {
		m.WGPublicKey[i] = byte(i)
	}
	for i := range nEgress {
		m.EgressIPs = append(m.EgressIPs, netip.AddrFrom16([16]byte{0x20, 0x01, 0xd, 0xb8, 15: byte(i)}))
	}
	return m
}

func TestNodeMetaRoundTrip(t *testing.T) {
	tests := []struct {
		name string
		meta NodeMeta
	}{
		{"zero", NodeMeta{}},
		{"v4 endpoint", NodeMeta{
			BootID:     1,
			WGEndpoint: netip.MustParseAddrPort("192.0.2.1:51820"),
			Overlay:    netip.MustParseAddr("10.99.0.1"),
			EgressIPs:  []netip.Addr{netip.MustParseAddr("198.51.100.7"), netip.MustParseAddr("198.51.100.8")},
		}},
		{"v6 and flags", fullMeta(3)},
		{"4in6 stays 4in6", NodeMeta{Overlay: netip.MustParseAddr("::ffff:10.0.0.1")}},
		{"port without address", NodeMeta{WGEndpoint: netip.AddrPortFrom(netip.Addr{}, 7)}},
		{"largest that fits", fullMeta(20)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			b, err := tt.meta.MarshalBinary()
			if err != nil {
				t.Fatalf("marshal: %v", err)
			}
			if len(b) > MetaMaxSize {
				t.Fatalf("encoded %d bytes > %d", len(b), MetaMaxSize)
			}
			var got NodeMeta
			if err := got.UnmarshalBinary(b); err != nil {
				t.Fatalf("unmarshal: %v", err)
			}
			if !reflect.DeepEqual(got, tt.meta) {
				t.Fatalf("round trip:\n got %+v\nwant %+v", got, tt.meta)
			}
		})
	}
}

func TestNodeMetaLimits(t *testing.T) {
	if _, err := fullMeta(21).MarshalBinary(); !errors.Is(err, errMetaTooLarge) {
		t.Fatalf("21 IPv6 egress IPs: err = %v, want errMetaTooLarge", err)
	}
	// A daemon has an IPv4 endpoint and IPv4 egress IPs: 70 of them fit
	// beside the rest.
	v4 := fullMeta(0)
	v4.WGEndpoint = netip.MustParseAddrPort("192.0.2.1:51820")
	for i := range 71 {
		v4.EgressIPs = append(v4.EgressIPs, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))
	}
	if _, err := v4.MarshalBinary(); !errors.Is(err, errMetaTooLarge) {
		t.Fatalf("71 IPv4 egress IPs: err = %v, want errMetaTooLarge", err)
	}
	v4.EgressIPs = v4.EgressIPs[:70]
	if _, err := v4.MarshalBinary(); err != nil {
		t.Fatalf("70 IPv4 egress IPs: %v", err)
	}
	if _, err := fullMeta(300).MarshalBinary(); !errors.Is(err, errMetaTooLarge) {
		t.Fatalf("300 egress IPs: err = %v, want errMetaTooLarge", err)
	}
	zoned := NodeMeta{WGEndpoint: netip.MustParseAddrPort("[fe80::1%eth0]:1")}
	if _, err := zoned.MarshalBinary(); err == nil {
		t.Fatal("zoned endpoint accepted")
	}
	invalid := NodeMeta{EgressIPs: []netip.Addr{{}}}
	if _, err := invalid.MarshalBinary(); err == nil {
		t.Fatal("invalid egress IP accepted")
	}
}

func TestNodeMetaUnmarshalRejects(t *testing.T) {
	good, err := fullMeta(2).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		b    []byte
	}{
		{"empty", nil},
		{"version 0", append([]byte{0}, good[1:]...)},
		{"unknown flag", append([]byte{1, 0x80}, good[2:]...)},
		{"truncated", good[:len(good)-1]},
		{"trailing byte", append(append([]byte(nil), good...), 0)},
		{"bad family", func() []byte { b := bytes.Clone(good); b[2+8+32] = 5; return b }()},
		{"too large", make([]byte, MetaMaxSize+1)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var m NodeMeta
			if err := m.UnmarshalBinary(tt.b); err == nil {
				t.Fatalf("accepted %x as %+v", tt.b, m)
			}
		})
	}
	// A later version may append fields before the signature: this
	// reader keeps the prefix it knows and the signature.
	sig := len(good) - sigSize
	newer := append([]byte{metaVersion + 1}, good[1:sig]...)
	newer = append(newer, 0xAA, 0xBB)
	newer = append(newer, good[sig:]...)
	var m NodeMeta
	if err := m.UnmarshalBinary(newer); err != nil {
		t.Fatalf("version 3 with extra fields: %v", err)
	}
	if want := fullMeta(2); m.BootID != want.BootID || m.Started != want.Started || m.Signature != want.Signature {
		t.Fatalf("version 3 prefix: %+v", m)
	}
}

func FuzzNodeMetaUnmarshal(f *testing.F) {
	for _, m := range []NodeMeta{{}, fullMeta(0), fullMeta(20)} {
		b, err := m.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{1, 0, 1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
		// The signature check reads the same bytes and never panics.
		_, _ = verifyMeta("n1", b)
		var m NodeMeta
		if err := m.UnmarshalBinary(b); err != nil {
			return
		}
		// Whatever decodes re-encodes within the limit and decodes equal.
		enc, err := m.MarshalBinary()
		if err != nil {
			t.Fatalf("decoded %+v does not re-encode: %v", m, err)
		}
		var again NodeMeta
		if err := again.UnmarshalBinary(enc); err != nil {
			t.Fatalf("re-encoded meta does not decode: %v", err)
		}
		if !reflect.DeepEqual(again, m) {
			t.Fatalf("unstable round trip:\n%+v\n%+v", m, again)
		}
	})
}
