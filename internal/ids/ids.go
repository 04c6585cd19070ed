// Package ids validates the identifiers users hand to vrouter and derives
// the DNS names of a container from them.
package ids

import (
	"fmt"
	"strconv"
	"strings"
)

// Zone is the DNS zone of private-network names.
const Zone = "private-network.internal."

// MaxTypeLen keeps a type usable as a DNS label.
const MaxTypeLen = 63

// Network checks a private network id: "pn-" followed by a lower-case UUID.
func Network(s string) error { return prefixedUUID("network", networkPrefix, s) }

// App checks an application id: "ap-" followed by a lower-case UUID.
func App(s string) error { return prefixedUUID("app", appPrefix, s) }

// IsNetwork, IsApp and IsType report what Network, App and Type check,
// without building an error: the DNS resolver calls them for every query
// name it parses.
func IsNetwork(s string) bool { return hasPrefixedUUID(s, networkPrefix) }

// IsApp: see IsNetwork.
func IsApp(s string) bool { return hasPrefixedUUID(s, appPrefix) }

// IsType: see IsNetwork.
func IsType(s string) bool { return s != "" && len(s) <= MaxTypeLen && typeChars(s) }

const (
	networkPrefix = "pn-"
	appPrefix     = "ap-"
)

// Type checks a container type: [a-z][a-z0-9-]*, at most 63 bytes.
func Type(s string) error {
	if s == "" {
		return fmt.Errorf("container type is empty")
	}
	if len(s) > MaxTypeLen {
		return fmt.Errorf("container type %q is longer than %d characters", s, MaxTypeLen)
	}
	if !typeChars(s) {
		return fmt.Errorf("container type %q must match [a-z][a-z0-9-]*", s)
	}
	return nil
}

func typeChars(s string) bool {
	for i := 0; i < len(s); i++ {
		c := s[i]
		ok := c >= 'a' && c <= 'z' || i > 0 && (c >= '0' && c <= '9' || c == '-')
		if !ok {
			return false
		}
	}
	return true
}

func prefixedUUID(what, prefix, s string) error {
	if !hasPrefixedUUID(s, prefix) {
		return fmt.Errorf("malformed %s id %q: want %s<uuid> (lower-case, 8-4-4-4-12 hex)", what, s, prefix)
	}
	return nil
}

func hasPrefixedUUID(s, prefix string) bool {
	return strings.HasPrefix(s, prefix) && isUUID(s[len(prefix):])
}

func isUUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch i {
		case 8, 13, 18, 23:
			if c != '-' {
				return false
			}
		default:
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
				return false
			}
		}
	}
	return true
}

// Names returns the DNS names that resolve to a container, most specific
// first: N.TYPE.APP.PN.zone, TYPE.APP.PN.zone and, for web containers,
// APP.PN.zone.
func Names(network, app, typ string, number int) []string {
	base := app + "." + network + "." + Zone
	names := []string{
		strconv.Itoa(number) + "." + typ + "." + base,
		typ + "." + base,
	}
	if typ == "web" {
		names = append(names, base)
	}
	return names
}
