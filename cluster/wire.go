package cluster

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Store message wire format (all integers big endian):
//
//	message  = version u8 (2) | type u8 | body
//	records  body = count u16 | count × record      (gossip broadcast)
//	state    body = count u32 | count × record      (push-pull full state)
//	bye      body = ownerLen u8 | owner | bootID u64 (owner leaves gracefully)
//	record   = body | signature [64]
//	body     = flags u8 (bit0 deleted) | ownerLen u8 | owner | keyLen u8 | key |
//	           bootID u64 | version u64 | claimed i64 | valueLen u16 | value
//
// The signature is the owner's ed25519 signature of recordSigDomain | body
// (identity.go). Version 1 had no signatures; its messages are refused and
// counted (MsgsBadVersion), never merged.
//
// Every length is checked against the limits below, a tombstone carries no
// value, and trailing bytes are an error. A single-record broadcast is at
// most 1315 bytes, under the ~1366 bytes memberlist leaves for a user
// message in an encrypted 1400-byte gossip packet.
const (
	wireVersion = 2

	msgRecords = 1
	msgState   = 2
	msgBye     = 3

	recFlagDeleted = 1 << 0

	// recordFixed is the size of a record without owner, key and value.
	recordFixed = 1 + 1 + 1 + 8 + 8 + 8 + 2 + sigSize

	sigSize = 64 // ed25519.SignatureSize
	// recordMin is the smallest valid record (1-byte owner and key).
	recordMin = recordFixed + 2
)

// Limits of the replicated store. Keys and node names longer than these, or
// larger values, are refused by Put (see CheckEntry) and by the decoder.
const (
	MaxNameLen  = 64
	MaxKeyLen   = 128
	MaxValueLen = 1024
)

// maxBroadcastSize is the largest single-record message; tests pin it below
// memberlist's per-message budget.
const maxBroadcastSize = 2 + 2 + recordFixed + MaxNameLen + MaxKeyLen + MaxValueLen

var (
	errWireVersion = errors.New("unknown store message version")
	errMalformed   = errors.New("malformed store message")
)

// record is one (Owner, Key) slot of the store as it travels and is kept.
type record struct {
	Entry
	boot    uint64
	deleted bool
	sig     [sigSize]byte // the owner's signature; see signedRecordBytes
}

// message is a decoded store message.
type message struct {
	typ     byte
	records []record
	owner   string // bye
	boot    uint64 // bye
}

func appendRecord(b []byte, r *record) []byte {
	return append(appendRecordBody(b, r), r.sig[:]...)
}

func appendRecordBody(b []byte, r *record) []byte {
	var flags byte
	if r.deleted {
		flags |= recFlagDeleted
	}
	b = append(b, flags, byte(len(r.Owner)))
	b = append(b, r.Owner...)
	b = append(b, byte(len(r.Key)))
	b = append(b, r.Key...)
	b = binary.BigEndian.AppendUint64(b, r.boot)
	b = binary.BigEndian.AppendUint64(b, r.Version)
	b = binary.BigEndian.AppendUint64(b, uint64(r.Claimed))
	b = binary.BigEndian.AppendUint16(b, uint16(len(r.Value)))
	return append(b, r.Value...)
}

func recordSize(r *record) int {
	return recordFixed + len(r.Owner) + len(r.Key) + len(r.Value)
}

// encodeRecords builds a gossip message. Callers pass records that passed
// checkRecord, so the field lengths fit their length bytes.
func encodeRecords(recs ...*record) []byte {
	n := 4
	for _, r := range recs {
		n += recordSize(r)
	}
	b := make([]byte, 0, n)
	b = append(b, wireVersion, msgRecords)
	b = binary.BigEndian.AppendUint16(b, uint16(len(recs)))
	for _, r := range recs {
		b = appendRecord(b, r)
	}
	return b
}

func encodeState(recs []*record) []byte {
	n := 6
	for _, r := range recs {
		n += recordSize(r)
	}
	b := make([]byte, 0, n)
	b = append(b, wireVersion, msgState)
	b = binary.BigEndian.AppendUint32(b, uint32(len(recs)))
	for _, r := range recs {
		b = appendRecord(b, r)
	}
	return b
}

func encodeBye(owner string, boot uint64) []byte {
	b := make([]byte, 0, 2+1+len(owner)+8)
	b = append(b, wireVersion, msgBye, byte(len(owner)))
	b = append(b, owner...)
	return binary.BigEndian.AppendUint64(b, boot)
}

// decodeMessage parses outside bytes. It copies everything it keeps, so the
// caller may reuse b (memberlist reuses NotifyMsg buffers). Errors wrap
// errWireVersion or errMalformed.
func decodeMessage(b []byte) (message, error) {
	r := reader{b: b}
	ver, typ := r.u8(), r.u8()
	if r.err != nil {
		return message{}, fmt.Errorf("%w: header: %v", errMalformed, r.err)
	}
	if ver != wireVersion {
		return message{}, fmt.Errorf("%w %d", errWireVersion, ver)
	}
	m := message{typ: typ}
	switch typ {
	case msgRecords, msgState:
		var n int
		if typ == msgRecords {
			n = int(r.u16())
		} else {
			n = int(r.u32())
		}
		if r.err != nil {
			return message{}, fmt.Errorf("%w: count: %v", errMalformed, r.err)
		}
		// Bound the allocation by what the bytes can hold, not by the
		// claimed count.
		if n > r.remaining()/recordMin {
			return message{}, fmt.Errorf("%w: %d records in %d bytes", errMalformed, n, r.remaining())
		}
		m.records = make([]record, n)
		for i := range m.records {
			if err := readRecord(&r, &m.records[i]); err != nil {
				return message{}, fmt.Errorf("%w: record %d: %v", errMalformed, i, err)
			}
		}
	case msgBye:
		m.owner = string(r.bytes(int(r.u8())))
		m.boot = r.u64()
		if r.err != nil {
			return message{}, fmt.Errorf("%w: bye: %v", errMalformed, r.err)
		}
		if err := checkName(m.owner); err != nil {
			return message{}, fmt.Errorf("%w: bye: %v", errMalformed, err)
		}
	default:
		return message{}, fmt.Errorf("%w: unknown type %d", errMalformed, typ)
	}
	if r.remaining() != 0 {
		return message{}, fmt.Errorf("%w: %d trailing bytes", errMalformed, r.remaining())
	}
	return m, nil
}

func readRecord(r *reader, rec *record) error {
	flags := r.u8()
	rec.Owner = string(r.bytes(int(r.u8())))
	rec.Key = string(r.bytes(int(r.u8())))
	rec.boot = r.u64()
	rec.Version = r.u64()
	rec.Claimed = int64(r.u64())
	if v := r.bytes(int(r.u16())); len(v) > 0 {
		rec.Value = append([]byte(nil), v...)
	}
	copy(rec.sig[:], r.bytes(sigSize))
	if r.err != nil {
		return r.err
	}
	if flags&^recFlagDeleted != 0 {
		return fmt.Errorf("unknown flags %#x", flags)
	}
	rec.deleted = flags&recFlagDeleted != 0
	return checkRecord(rec)
}

// checkRecord enforces the limits every stored record obeys.
func checkRecord(rec *record) error {
	if err := checkName(rec.Owner); err != nil {
		return err
	}
	if err := CheckEntry(rec.Key, rec.Value); err != nil {
		return err
	}
	if rec.deleted && len(rec.Value) != 0 {
		return errors.New("tombstone with a value")
	}
	if rec.Version == 0 {
		return errors.New("version 0")
	}
	return nil
}

func checkName(name string) error {
	if name == "" || len(name) > MaxNameLen {
		return fmt.Errorf("node name of %d bytes (1..%d)", len(name), MaxNameLen)
	}
	return nil
}

// CheckEntry reports whether Put would accept key and value. Callers that
// build keys from outside input (names given on the command line) check
// first, because Put panics on a caller bug rather than silently truncating.
func CheckEntry(key string, value []byte) error {
	if key == "" || len(key) > MaxKeyLen {
		return fmt.Errorf("store key of %d bytes (1..%d)", len(key), MaxKeyLen)
	}
	if len(value) > MaxValueLen {
		return fmt.Errorf("store value of %d bytes (max %d)", len(value), MaxValueLen)
	}
	return nil
}
