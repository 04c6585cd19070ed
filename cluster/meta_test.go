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
		{"largest that fits", fullMeta(26)},
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
	if _, err := fullMeta(27).MarshalBinary(); !errors.Is(err, errMetaTooLarge) {
		t.Fatalf("27 IPv6 egress IPs: err = %v, want errMetaTooLarge", err)
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
	// A later version may append fields: a version-1 reader keeps the prefix.
	newer := append([]byte{2}, good[1:]...)
	newer = append(newer, 0xAA, 0xBB)
	var m NodeMeta
	if err := m.UnmarshalBinary(newer); err != nil {
		t.Fatalf("version 2 with extra fields: %v", err)
	}
	if m.BootID != fullMeta(2).BootID {
		t.Fatalf("version 2 prefix: BootID %x", m.BootID)
	}
}

func FuzzNodeMetaUnmarshal(f *testing.F) {
	for _, m := range []NodeMeta{{}, fullMeta(0), fullMeta(26)} {
		b, err := m.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{1, 0, 1, 2, 3})
	f.Fuzz(func(t *testing.T, b []byte) {
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
