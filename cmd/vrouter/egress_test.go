package main

import (
	"path/filepath"
	"testing"
)

// TestEgressBadInput: what the egress and gateway subcommands refuse
// themselves, with the CLI contract of TestBadInput.
func TestEgressBadInput(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.sock")
	tests := []badInput{
		{"egress no action", []string{"egress"}, exitUsage, "one action"},
		{"egress two actions", []string{"egress", "enable", "show", "--app", ap}, exitUsage, "one action"},
		{"egress unknown action", []string{"egress", "frob"}, exitUsage, `unknown egress action "frob"`},
		{"enable without app", []string{"egress", "enable"}, exitUsage, "egress enable needs --app"},
		{"disable without app", []string{"egress", "disable"}, exitUsage, "egress disable needs --app"},
		{"enable malformed app", []string{"egress", "enable", "--app", "ap-XYZ"}, exitUsage, "malformed app id"},
		{"show malformed app", []string{"egress", "show", "--app", "web"}, exitUsage, "malformed app id"},
		{"egress unknown flag", []string{"egress", "show", "--frob"}, exitUsage, "unknown flag"},
		{"egress daemon missing", []string{"egress", "show", "--control", missing}, exitFailure, "daemon not running"},
		{"gateway no action", []string{"gateway"}, exitUsage, "one action"},
		{"gateway unknown action", []string{"gateway", "pause"}, exitUsage, `unknown gateway action "pause"`},
		{"gateway daemon missing", []string{"gateway", "drain", "--control", missing}, exitFailure, "daemon not running"},
	}
	checkBadInput(t, tests)
}
