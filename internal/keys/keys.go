// Package keys makes the 32-byte secrets of a node: the cluster key
// (AES-256-GCM, memberlist's keyring) and the WireGuard private key
// (Curve25519). Both are random bytes, written base64-encoded in key files
// and printed so by `vrouter keygen`; only the WireGuard key is clamped, by
// whoever uses it as a Curve25519 scalar (router).
package keys

import (
	"crypto/rand"
	"encoding/base64"
	"fmt"
)

// Size is the length of every key.
const Size = 32

// Generate returns a new random key.
func Generate() ([Size]byte, error) {
	var k [Size]byte
	if _, err := rand.Read(k[:]); err != nil {
		return k, fmt.Errorf("generate key: %w", err)
	}
	return k, nil
}

// Clamp returns k as a Curve25519 private key (RFC 7748 section 5), as
// `wg genkey` writes it: the low three bits cleared, the top bit cleared
// and the next one set.
func Clamp(k [Size]byte) [Size]byte {
	k[0] &= 248
	k[31] = k[31]&127 | 64
	return k
}

// Encode returns k base64-encoded, the form of key files.
func Encode(k [Size]byte) string { return base64.StdEncoding.EncodeToString(k[:]) }
