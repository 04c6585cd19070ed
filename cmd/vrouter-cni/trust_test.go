package main

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"
)

// TestUntrustedSocket: a control socket in a directory others may write to
// (where anybody could have put it in the daemon's place) is refused by
// ADD, DEL, GC and STATUS with a configuration error naming it, before
// the plugin connects: the listener here never answers, and must never see
// a connection (a plugin that skipped the check would send the request and
// wait for the answer, or queue a DEL as if the daemon were away).
func TestUntrustedSocket(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "open")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "control.sock")
	ln, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: sock, Net: "unixpacket"})
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	dataDir := filepath.Join(t.TempDir(), "data")
	stdin := conf(`,"control":"` + sock + `","dataDir":"` + dataDir + `"`)
	args := &skel.CmdArgs{ContainerID: "c1", IfName: "pn0", Args: "APP=" + testApp + ";TYPE=web", StdinData: stdin}

	for _, c := range []struct {
		name string
		run  func(*skel.CmdArgs) error
	}{{"add", cmdAdd}, {"del", cmdDel}, {"gc", cmdGC}, {"status", cmdStatus}} {
		t.Run(c.name, func(t *testing.T) {
			err := c.run(args)
			if err == nil {
				t.Fatal("succeeded against an untrusted socket")
			}
			var te *types.Error
			if !errors.As(err, &te) {
				t.Fatalf("want a CNI error object, got %T: %v", err, err)
			}
			if te.Code != types.ErrInvalidNetworkConfig {
				t.Errorf("code %d, want %d: %v", te.Code, types.ErrInvalidNetworkConfig, err)
			}
			if !strings.Contains(te.Msg, sock) || !strings.Contains(te.Msg, "others may write") {
				t.Errorf("msg %q does not name the socket and why", te.Msg)
			}
		})
	}
	if ents, err := os.ReadDir(dataDir); err == nil {
		for _, e := range ents {
			if e.Name() != ".lock" {
				t.Errorf("DEL queued %s against an untrusted socket", e.Name())
			}
		}
	}
	// Nothing ever connected: the deadline already passed, so Accept
	// returns at once, with a connection only if one is pending.
	ln.SetDeadline(time.Unix(1, 0))
	if c, err := ln.Accept(); err == nil {
		c.Close()
		t.Fatal("the plugin connected to the untrusted socket")
	}
}
