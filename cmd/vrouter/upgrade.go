package main

import (
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/vrouter/vrouter/internal/control"
)

func cmdUpgrade(args []string, stdout io.Writer) error {
	fs := newFlags("upgrade", "upgrade [--binary PATH] [--json] [flags]", stdout)
	sock := fs.String("control", "", "control socket (default $VROUTER_CONTROL, else control.sock in the default state dir)")
	bin := fs.String("binary", "", "the new vrouter binary (default: the path vrouter run was started from, replaced in place)")
	timeout := fs.Duration("timeout", 90*time.Second, "how long to wait for the upgrade to finish")
	asJSON := fs.Bool("json", false, "print the status after the upgrade as JSON")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("upgrade takes no arguments")
	}
	if *bin != "" {
		abs, err := filepath.Abs(*bin)
		if err != nil {
			return usagef("--binary %q: %v", *bin, err)
		}
		*bin = abs
	}
	path := *sock
	var started control.UpgradeStarted
	if err := call(path, &control.Request{Op: control.OpUpgrade, Upgrade: &control.UpgradeRequest{Binary: *bin}}, nil, &started); err != nil {
		return err
	}
	// The worker answering is replaced on success: poll status (the
	// socket is away for the moment of the handover) until the
	// supervisor counts this attempt as done.
	deadline := time.Now().Add(*timeout)
	var st control.Status
	for {
		err := call(path, &control.Request{Op: control.OpStatus}, nil, &st)
		if err == nil && st.Supervisor != nil && st.Supervisor.UpgradeAttempts >= started.Attempt {
			break
		}
		if time.Now().After(deadline) {
			if err == nil {
				err = errors.New("still under way")
			}
			return fmt.Errorf("upgrade: not finished within %v: %w", *timeout, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if *asJSON {
		if err := writeJSON(stdout, st); err != nil {
			return err
		}
	} else if st.Supervisor.LastUpgrade == "ok" {
		fmt.Fprintf(stdout, "upgraded: worker pid %d, version %s\n", st.Pid, st.Version)
	}
	if st.Supervisor.LastUpgrade != "ok" {
		return fmt.Errorf("upgrade failed, the old worker (pid %d, version %s) keeps running: %s", st.Pid, st.Version, st.Supervisor.LastUpgrade)
	}
	return nil
}
