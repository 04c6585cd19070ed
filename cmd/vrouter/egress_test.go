package main

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// TestEgressBadInput: what the egress and gateway subcommands refuse
// themselves, with the CLI contract of TestBadInput.
func TestEgressBadInput(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "none.sock")
	tests := []struct {
		name string
		args []string
		code int
		want string
	}{
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
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := run(tt.args, &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit code %d, want %d (stderr %q)", code, tt.code, stderr.String())
			}
			msg := stderr.String()
			if !strings.HasPrefix(msg, "vrouter: ") || strings.Count(msg, "\n") != 1 || !strings.Contains(msg, tt.want) {
				t.Errorf("stderr %q: want one line starting with \"vrouter: \" containing %q", msg, tt.want)
			}
			if stdout.Len() != 0 {
				t.Errorf("stdout %q, want nothing", stdout.String())
			}
		})
	}
}
