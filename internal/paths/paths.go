// Package paths holds the default locations of a node's state, shared by
// `vrouter run` (where it keeps its state) and the client subcommands
// (where they look for its control socket). Every default is absolute: a
// default relative to the working directory made a root `vrouter attach`
// run in a directory someone else can write to talk to whatever socket
// was planted there (AUDIT D11).
package paths

import (
	"errors"
	"path/filepath"
	"strings"
)

// SystemStateDir is root's state directory, and systemd's for a unit with
// StateDirectory=vrouter.
const SystemStateDir = "/var/lib/vrouter"

// ControlName is the control socket's file name in the state directory.
const ControlName = "control.sock"

// StateDir returns the default state directory of a process of user euid
// whose environment getenv reads:
//
//   - $STATE_DIRECTORY, set by systemd for StateDirectory= (the first of
//     its colon-separated list), when absolute;
//   - SystemStateDir for root;
//   - $XDG_STATE_HOME/vrouter when $XDG_STATE_HOME is absolute (the XDG
//     base directory spec says to ignore a relative one);
//   - $HOME/.local/state/vrouter.
//
// Without an absolute $HOME a non-root user has no default: the error says
// to name one.
func StateDir(getenv func(string) string, euid int) (string, error) {
	if sd, _, _ := strings.Cut(getenv("STATE_DIRECTORY"), ":"); filepath.IsAbs(sd) {
		return filepath.Clean(sd), nil
	}
	if euid == 0 {
		return SystemStateDir, nil
	}
	if x := getenv("XDG_STATE_HOME"); filepath.IsAbs(x) {
		return filepath.Join(x, "vrouter"), nil
	}
	if h := getenv("HOME"); filepath.IsAbs(h) {
		return filepath.Join(h, ".local", "state", "vrouter"), nil
	}
	return "", errors.New("no default state directory: $HOME is not an absolute path (give --state-dir)")
}

// ControlSocket is the default control socket: ControlName in StateDir.
func ControlSocket(getenv func(string) string, euid int) (string, error) {
	dir, err := StateDir(getenv, euid)
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, ControlName), nil
}
