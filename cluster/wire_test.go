package cluster

import (
	"bytes"
	"errors"
	"reflect"
	"strings"
	"testing"
)

func maxRecord() *record {
	return &record{
		Entry: Entry{
			Key:     strings.Repeat("k", MaxKeyLen),
			Owner:   strings.Repeat("o", MaxNameLen),
			Version: ^uint64(0),
			Claimed: -1,
			Value:   bytes.Repeat([]byte{0xff}, MaxValueLen),
		},
		boot: ^uint64(0),
	}
}

func TestWireRoundTrip(t *testing.T) {
	recs := []*record{
		{Entry: Entry{Key: "a", Owner: "n1", Version: 1, Claimed: 5, Value: []byte("v")}, boot: 9},
		{Entry: Entry{Key: "b", Owner: "n2", Version: 7, Claimed: 6}, boot: 10, deleted: true},
		maxRecord(),
	}
	for _, enc := range []struct {
		name string
		b    []byte
		typ  byte
	}{
		{"records", encodeRecords(recs...), msgRecords},
		{"state", encodeState(recs), msgState},
	} {
		t.Run(enc.name, func(t *testing.T) {
			m, err := decodeMessage(enc.b)
			if err != nil {
				t.Fatal(err)
			}
			if m.typ != enc.typ || len(m.records) != len(recs) {
				t.Fatalf("type %d with %d records", m.typ, len(m.records))
			}
			for i := range recs {
				if !reflect.DeepEqual(m.records[i], *recs[i]) {
					t.Fatalf("record %d:\n got %+v\nwant %+v", i, m.records[i], *recs[i])
				}
			}
		})
	}
	m, err := decodeMessage(encodeBye("n3", 42))
	if err != nil || m.typ != msgBye || m.owner != "n3" || m.boot != 42 {
		t.Fatalf("bye: %+v, %v", m, err)
	}
}

// TestWireBroadcastSize pins the largest single-record broadcast under what
// memberlist leaves for a user message in an encrypted gossip packet:
// UDPBufferSize 1400 - compound header 2 - AES-GCM overhead 29 - per-message
// overhead 2 - user message type 1.
func TestWireBroadcastSize(t *testing.T) {
	const budget = 1400 - 2 - 29 - 2 - 1
	b := encodeRecords(maxRecord())
	if len(b) != maxBroadcastSize {
		t.Fatalf("largest broadcast is %d bytes, maxBroadcastSize says %d", len(b), maxBroadcastSize)
	}
	// Signatures took 64 bytes of the margin; memberlist compresses a
	// packet only when that makes it smaller, so this margin holds.
	if len(b) > budget-50 {
		t.Fatalf("largest broadcast %d bytes is not well under the %d-byte budget", len(b), budget)
	}
}

func TestWireDecodeRejects(t *testing.T) {
	good := encodeRecords(&record{Entry: Entry{Key: "a", Owner: "n1", Version: 1, Value: []byte("v")}, boot: 1})
	mutate := func(f func(b []byte) []byte) []byte { return f(bytes.Clone(good)) }
	tests := []struct {
		name    string
		b       []byte
		version bool // errWireVersion rather than errMalformed
	}{
		{"empty", nil, false},
		{"one byte", []byte{1}, false},
		{"version 0", mutate(func(b []byte) []byte { b[0] = 0; return b }), true},
		{"version 1 (unsigned)", mutate(func(b []byte) []byte { b[0] = 1; return b }), true},
		{"version 3", mutate(func(b []byte) []byte { b[0] = 3; return b }), true},
		{"unknown type", mutate(func(b []byte) []byte { b[1] = 9; return b }), false},
		{"count too large", mutate(func(b []byte) []byte { b[2], b[3] = 0xff, 0xff; return b }), false},
		{"count too small", mutate(func(b []byte) []byte { b[3] = 0; return b }), false},
		{"truncated", good[:len(good)-1], false},
		{"trailing", append(bytes.Clone(good), 0), false},
		{"unknown flag", mutate(func(b []byte) []byte { b[4] = 0x80; return b }), false},
		{"empty owner", encodeRecords(&record{Entry: Entry{Key: "a", Version: 1}}), false},
		{"empty key", encodeRecords(&record{Entry: Entry{Owner: "n", Version: 1}}), false},
		{"version 0 record", encodeRecords(&record{Entry: Entry{Key: "a", Owner: "n"}}), false},
		{"tombstone with value", encodeRecords(&record{Entry: Entry{Key: "a", Owner: "n", Version: 1, Value: []byte("x")}, deleted: true}), false},
		{"value too large", encodeRecords(&record{Entry: Entry{Key: "a", Owner: "n", Version: 1, Value: make([]byte, MaxValueLen+1)}}), false},
		{"key too long", encodeRecords(&record{Entry: Entry{Key: strings.Repeat("k", MaxKeyLen+1), Owner: "n", Version: 1}}), false},
		{"owner too long", encodeRecords(&record{Entry: Entry{Key: "k", Owner: strings.Repeat("o", MaxNameLen+1), Version: 1}}), false},
		{"state count huge", []byte{wireVersion, msgState, 0xff, 0xff, 0xff, 0xff}, false},
		{"bye truncated", encodeBye("n", 1)[:5], false},
		{"bye empty owner", []byte{wireVersion, msgBye, 0, 0, 0, 0, 0, 0, 0, 0, 1}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := decodeMessage(tt.b)
			if err == nil {
				t.Fatalf("accepted %x as %+v", tt.b, m)
			}
			want := errMalformed
			if tt.version {
				want = errWireVersion
			}
			if !errors.Is(err, want) {
				t.Fatalf("err = %v, want %v", err, want)
			}
		})
	}
}

// TestWireDecodeCopies: memberlist reuses NotifyMsg buffers, so nothing
// decoded may alias the input.
func TestWireDecodeCopies(t *testing.T) {
	b := encodeRecords(&record{Entry: Entry{Key: "key", Owner: "own", Version: 1, Value: []byte("value")}, boot: 1})
	m, err := decodeMessage(b)
	if err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] = 'X'
	}
	r := m.records[0]
	if r.Key != "key" || r.Owner != "own" || string(r.Value) != "value" {
		t.Fatalf("decoded record changed with its buffer: %+v", r)
	}
}

func FuzzDecodeMessage(f *testing.F) {
	f.Add(encodeRecords(&record{Entry: Entry{Key: "a", Owner: "n1", Version: 1, Claimed: 2, Value: []byte("v")}, boot: 3}))
	f.Add(encodeState([]*record{maxRecord(), {Entry: Entry{Key: "b", Owner: "n2", Version: 2}, boot: 1, deleted: true}}))
	f.Add(encodeBye("node", 7))
	f.Add([]byte{1, msgState, 0, 0, 0, 1})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMessage(b)
		if err != nil {
			if !errors.Is(err, errMalformed) && !errors.Is(err, errWireVersion) {
				t.Fatalf("unclassified error %v", err)
			}
			return
		}
		// Whatever decodes obeys the limits and re-encodes to the same bytes.
		var enc []byte
		switch m.typ {
		case msgRecords, msgState:
			recs := make([]*record, len(m.records))
			for i := range m.records {
				if err := checkRecord(&m.records[i]); err != nil {
					t.Fatalf("decoded record breaks limits: %v", err)
				}
				recs[i] = &m.records[i]
			}
			if m.typ == msgRecords {
				enc = encodeRecords(recs...)
			} else {
				enc = encodeState(recs)
			}
		case msgBye:
			enc = encodeBye(m.owner, m.boot)
		default:
			t.Fatalf("decoded unknown type %d", m.typ)
		}
		if !bytes.Equal(enc, b) {
			t.Fatalf("re-encoding differs:\n in %x\nout %x", b, enc)
		}
		// And merging it into a store never panics either.
		// Known signers, so records get as far as the signature check.
		s := newStore("self", 1, 0)
		s.keyOf = testKeyOf
		s.setOwner("n1", 3, true)
		_, _ = s.handleMessage(b, true)
		_ = s.List("")
		_ = s.localState()
	})
}
