package cluster

import (
	"crypto/ed25519"
	"encoding/binary"
	"errors"
	"fmt"
	"net/netip"
)

// MetaMaxSize is memberlist's node metadata limit (memberlist.MetaMaxSize).
// memberlist panics on longer metadata, so MarshalBinary refuses first.
const MetaMaxSize = 512

// metaVersion is the encoding version written by MarshalBinary. Later
// versions may only append fields (before the signature, which is always
// last), so an older reader can still read the prefix it knows. Version 1
// had no signature: such metadata decodes, but a Cluster refuses it.
const metaVersion = 2

const (
	metaFlagGateway   = 1 << 0
	metaFlagDraining  = 1 << 1
	metaFlagUnhealthy = 1 << 2
	metaFlagsKnown    = metaFlagGateway | metaFlagDraining | metaFlagUnhealthy
)

// Address family tags inside the metadata encoding.
const (
	famNone = 0
	famV4   = 4
	famV6   = 6
)

// NodeMeta is gossiped as memberlist node metadata. Its binary encoding is
// versioned and must fit MetaMaxSize bytes; MarshalBinary errors otherwise,
// so memberlist never sees oversized metadata.
type NodeMeta struct {
	BootID      uint64 // random per daemon start: tells a restarted node's records from its previous life's
	WGPublicKey [32]byte
	WGEndpoint  netip.AddrPort
	Overlay     netip.Addr // the node's IPv4 overlay address (outer VXLAN source)
	Gateway     bool       // has egress IPs
	EgressIPs   []netip.Addr
	Draining    bool
	Unhealthy   bool // a gateway whose probe of the outside fails (--egress-probe)

	// Filled in and signed by the Cluster (values set by callers of New
	// and SetMeta are replaced):
	Started    int64    // unix nanos when this life started: no claim of it is older
	SigningKey [32]byte // ed25519 public key; pinned to the node's name
	Signature  [64]byte // over metaSigDomain | name | the encoding before it
}

var errMetaTooLarge = errors.New("node metadata exceeds 512 bytes")

// MarshalBinary encodes m as:
//
//	version u8 | flags u8 | bootID u64 | wgkey [32] | endpoint addr, port u16 |
//	overlay addr | n u8 | n × addr | started i64 | signingKey [32] | signature [64]
//
// where addr is a family byte (0 none, 4, 6) followed by 0, 4 or 16 bytes.
// Zoned IPv6 addresses are refused: a zone means nothing on another host.
// The signature is written as it is in m; signMeta computes it.
func (m NodeMeta) MarshalBinary() ([]byte, error) {
	if len(m.EgressIPs) > 255 {
		return nil, fmt.Errorf("%w: %d egress IPs", errMetaTooLarge, len(m.EgressIPs))
	}
	b := make([]byte, 0, 184+len(m.EgressIPs)*5)
	b = append(b, metaVersion, m.flags())
	b = binary.BigEndian.AppendUint64(b, m.BootID)
	b = append(b, m.WGPublicKey[:]...)
	var err error
	if b, err = appendAddr(b, m.WGEndpoint.Addr()); err != nil {
		return nil, fmt.Errorf("wireguard endpoint: %w", err)
	}
	b = binary.BigEndian.AppendUint16(b, m.WGEndpoint.Port())
	if b, err = appendAddr(b, m.Overlay); err != nil {
		return nil, fmt.Errorf("overlay address: %w", err)
	}
	b = append(b, byte(len(m.EgressIPs)))
	for i, ip := range m.EgressIPs {
		if !ip.IsValid() {
			return nil, fmt.Errorf("egress IP %d: invalid address", i)
		}
		if b, err = appendAddr(b, ip); err != nil {
			return nil, fmt.Errorf("egress IP %d: %w", i, err)
		}
	}
	b = binary.BigEndian.AppendUint64(b, uint64(m.Started))
	b = append(b, m.SigningKey[:]...)
	b = append(b, m.Signature[:]...)
	if len(b) > MetaMaxSize {
		return nil, fmt.Errorf("%w: %d bytes", errMetaTooLarge, len(b))
	}
	return b, nil
}

func (m NodeMeta) flags() byte {
	var f byte
	if m.Gateway {
		f |= metaFlagGateway
	}
	if m.Draining {
		f |= metaFlagDraining
	}
	if m.Unhealthy {
		f |= metaFlagUnhealthy
	}
	return f
}

func appendAddr(b []byte, a netip.Addr) ([]byte, error) {
	switch {
	case !a.IsValid():
		return append(b, famNone), nil
	case a.Zone() != "":
		return nil, fmt.Errorf("zoned address %s", a)
	case a.Is4():
		v := a.As4()
		return append(append(b, famV4), v[:]...), nil
	default:
		v := a.As16()
		return append(append(b, famV6), v[:]...), nil
	}
}

// UnmarshalBinary decodes what MarshalBinary wrote. It never panics on
// garbage: every read is length-checked, unknown flag bits and trailing bytes
// of an encoding of this version are errors. Encodings with a higher version
// are read up to the fields this version knows. It does not check the
// signature (verifyMeta does): version-1 metadata decodes with a zero
// SigningKey.
func (m *NodeMeta) UnmarshalBinary(b []byte) error {
	if len(b) > MetaMaxSize {
		return fmt.Errorf("%w: %d bytes", errMetaTooLarge, len(b))
	}
	r := reader{b: b}
	ver := r.u8()
	flags := r.u8()
	if r.err != nil {
		return fmt.Errorf("node metadata: %w", r.err)
	}
	if ver == 0 {
		return fmt.Errorf("node metadata: version 0")
	}
	if ver <= metaVersion && flags&^metaFlagsKnown != 0 {
		return fmt.Errorf("node metadata: unknown flags %#x", flags)
	}
	var out NodeMeta
	if ver >= 2 {
		// The signature is always last.
		if len(b) < 2+sigSize {
			return fmt.Errorf("node metadata: %w", errShort)
		}
		copy(out.Signature[:], b[len(b)-sigSize:])
		r.b = r.b[:len(r.b)-sigSize]
	}
	out.Gateway = flags&metaFlagGateway != 0
	out.Draining = flags&metaFlagDraining != 0
	out.Unhealthy = flags&metaFlagUnhealthy != 0
	out.BootID = r.u64()
	copy(out.WGPublicKey[:], r.bytes(32))
	ep := r.addr()
	port := r.u16()
	if ep.IsValid() || port != 0 {
		out.WGEndpoint = netip.AddrPortFrom(ep, port)
	}
	out.Overlay = r.addr()
	n := int(r.u8())
	if n > 0 && r.err == nil {
		out.EgressIPs = make([]netip.Addr, 0, min(n, r.remaining()/5+1))
		for range n {
			ip := r.addr()
			if r.err != nil {
				break
			}
			if !ip.IsValid() {
				return fmt.Errorf("node metadata: invalid egress IP")
			}
			out.EgressIPs = append(out.EgressIPs, ip)
		}
	}
	if ver >= 2 {
		out.Started = int64(r.u64())
		copy(out.SigningKey[:], r.bytes(32))
	}
	if r.err != nil {
		return fmt.Errorf("node metadata: %w", r.err)
	}
	if ver <= metaVersion && r.remaining() != 0 {
		return fmt.Errorf("node metadata: %d trailing bytes", r.remaining())
	}
	*m = out
	return nil
}

var errMetaUnsigned = errors.New("node metadata is not signed")

// signMeta fills in m's SigningKey, signs m for name and returns the
// encoding.
func signMeta(name string, m *NodeMeta, s *signer) ([]byte, error) {
	m.SigningKey = s.pub
	m.Signature = [sigSize]byte{}
	b, err := m.MarshalBinary()
	if err != nil {
		return nil, err
	}
	sig := ed25519.Sign(s.priv, metaSignedBytes(name, b[:len(b)-sigSize]))
	copy(m.Signature[:], sig)
	copy(b[len(b)-sigSize:], sig)
	return b, nil
}

func metaSignedBytes(name string, body []byte) []byte {
	msg := make([]byte, 0, len(metaSigDomain)+1+len(name)+len(body))
	msg = append(msg, metaSigDomain...)
	msg = append(msg, byte(len(name)))
	msg = append(msg, name...)
	return append(msg, body...)
}

// verifyMeta decodes b and checks that it is signed, for name, by the key
// it carries. Whether that key is the one pinned for name is the caller's
// question. Errors wrap errMetaUnsigned when the encoding is fine but the
// signature is missing or wrong.
func verifyMeta(name string, b []byte) (NodeMeta, error) {
	var m NodeMeta
	if err := m.UnmarshalBinary(b); err != nil {
		return NodeMeta{}, err
	}
	if b[0] < 2 || m.SigningKey == ([32]byte{}) {
		return m, fmt.Errorf("%w (version %d)", errMetaUnsigned, b[0])
	}
	if !ed25519.Verify(m.SigningKey[:], metaSignedBytes(name, b[:len(b)-sigSize]), m.Signature[:]) {
		return m, fmt.Errorf("%w: bad signature", errMetaUnsigned)
	}
	return m, nil
}

var errShort = errors.New("truncated")

// reader is a length-checked cursor over outside bytes. After the first
// short read every accessor returns zero values and err stays set, so
// decoders can read a whole structure and check err once.
type reader struct {
	b   []byte
	err error
}

func (r *reader) remaining() int { return len(r.b) }

func (r *reader) bytes(n int) []byte {
	if r.err != nil || n < 0 || n > len(r.b) {
		r.fail(errShort)
		return nil
	}
	v := r.b[:n:n]
	r.b = r.b[n:]
	return v
}

func (r *reader) fail(err error) {
	if r.err == nil {
		r.err = err
	}
	r.b = nil
}

func (r *reader) u8() byte {
	if v := r.bytes(1); v != nil {
		return v[0]
	}
	return 0
}

func (r *reader) u16() uint16 {
	if v := r.bytes(2); v != nil {
		return binary.BigEndian.Uint16(v)
	}
	return 0
}

func (r *reader) u32() uint32 {
	if v := r.bytes(4); v != nil {
		return binary.BigEndian.Uint32(v)
	}
	return 0
}

func (r *reader) u64() uint64 {
	if v := r.bytes(8); v != nil {
		return binary.BigEndian.Uint64(v)
	}
	return 0
}

func (r *reader) addr() netip.Addr {
	switch fam := r.u8(); {
	case r.err != nil:
		return netip.Addr{}
	case fam == famNone:
		return netip.Addr{}
	case fam == famV4:
		if v := r.bytes(4); v != nil {
			return netip.AddrFrom4([4]byte(v))
		}
	case fam == famV6:
		if v := r.bytes(16); v != nil {
			return netip.AddrFrom16([16]byte(v))
		}
	default:
		r.fail(fmt.Errorf("unknown address family %d", fam))
	}
	return netip.Addr{}
}
