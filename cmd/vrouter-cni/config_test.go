package main

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/containernetworking/cni/pkg/skel"
	"github.com/containernetworking/cni/pkg/types"

	"github.com/vrouter/vrouter/internal/control"
	"github.com/vrouter/vrouter/internal/tunnel"
)

const (
	testPN  = "pn-11111111-2222-4333-8444-555555555555"
	testApp = "ap-11111111-2222-4333-8444-555555555555"
)

func conf(extra string) []byte {
	return []byte(`{"cniVersion":"1.0.0","name":"n","type":"vrouter-cni","network":"` + testPN + `","control":"/run/c.sock"` + extra + `}`)
}

func code(t *testing.T, err error) uint {
	t.Helper()
	var te *types.Error
	if !errors.As(err, &te) {
		t.Fatalf("want *types.Error, got %T: %v", err, err)
	}
	return te.Code
}

func TestParseConf(t *testing.T) {
	c, err := parseConf(conf(""))
	if err != nil {
		t.Fatal(err)
	}
	if c.mode != tunnel.ModePNOnly || c.DataDir != defaultDataDir || c.MTU != 0 {
		t.Fatalf("defaults: mode %q dataDir %q mtu %d", c.mode, c.DataDir, c.MTU)
	}
	c, err = parseConf(conf(`,"mode":"full","mtu":1280,"dataDir":"/tmp/x"`))
	if err != nil || c.mode != tunnel.ModeFull || c.MTU != 1280 || c.DataDir != "/tmp/x" {
		t.Fatalf("full: %+v %v", c, err)
	}
	bad := []struct {
		name string
		in   []byte
		code uint
		want string
	}{
		{"not json", []byte(`{`), types.ErrDecodingFailure, "malformed"},
		{"no network", []byte(`{"cniVersion":"1.0.0","name":"n","control":"/c"}`), types.ErrInvalidNetworkConfig, `no "network"`},
		{"bad network", []byte(`{"cniVersion":"1.0.0","name":"n","network":"pn-x","control":"/c"}`), types.ErrInvalidNetworkConfig, "pn-x"},
		{"no control", []byte(`{"cniVersion":"1.0.0","name":"n","network":"` + testPN + `"}`), types.ErrInvalidNetworkConfig, `no "control"`},
		{"relative control", conf(`,"control":"run/c.sock"`), types.ErrInvalidNetworkConfig, `"run/c.sock" is a relative path`},
		{"dot-relative control", conf(`,"control":"./c.sock"`), types.ErrInvalidNetworkConfig, "relative path"},
		{"bad mode", conf(`,"mode":"l2"`), types.ErrInvalidNetworkConfig, `"l2"`},
		{"mtu too small", conf(`,"mtu":100`), types.ErrInvalidNetworkConfig, "576"},
		{"mtu negative", conf(`,"mtu":-1`), types.ErrInvalidNetworkConfig, "576"},
	}
	for _, b := range bad {
		t.Run(b.name, func(t *testing.T) {
			_, err := parseConf(b.in)
			if err == nil {
				t.Fatal("accepted")
			}
			if got := code(t, err); got != b.code || !strings.Contains(err.Error(), b.want) {
				t.Fatalf("code %d %q, want %d naming %q", got, err, b.code, b.want)
			}
		})
	}
}

func TestContainerIdentity(t *testing.T) {
	fileArgs := `,"args":{"cni":{"app":"` + testApp + `","type":"worker","number":4}}`
	cases := []struct {
		name    string
		extra   string
		cniArgs string
		want    identity
		wantErr string
	}{
		{"from CNI_ARGS, unknown keys ignored", "", "K8S_POD_NAME=x;APP=" + testApp + ";TYPE=web;NUMBER=2", identity{testApp, "web", 2}, ""},
		{"runtime IgnoreUnknown", "", "IgnoreUnknown=1;APP=" + testApp + ";TYPE=web", identity{testApp, "web", 0}, ""},
		{"from args.cni", fileArgs, "", identity{testApp, "worker", 4}, ""},
		{"CNI_ARGS wins key by key", fileArgs, "NUMBER=7", identity{testApp, "worker", 7}, ""},
		{"string number in args.cni", `,"args":{"cni":{"app":"` + testApp + `","type":"web","number":"3"}}`, "", identity{testApp, "web", 3}, ""},
		{"no app", "", "TYPE=web", identity{}, "no app"},
		{"no type", "", "APP=" + testApp, identity{}, "no type"},
		{"bad type", "", "APP=" + testApp + ";TYPE=Web", identity{}, "Web"},
		{"bad number", "", "APP=" + testApp + ";TYPE=web;NUMBER=-1", identity{}, `"-1"`},
		{"malformed CNI_ARGS", "", "APP", identity{}, "CNI_ARGS"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			nc, err := parseConf(conf(c.extra))
			if err != nil {
				t.Fatal(err)
			}
			got, err := containerIdentity(nc, &skel.CmdArgs{Args: c.cniArgs})
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("err %v, want one naming %q", err, c.wantErr)
				}
				code(t, err)
				return
			}
			if err != nil || got != c.want {
				t.Fatalf("got %+v %v, want %+v", got, err, c.want)
			}
		})
	}
}

func TestSearchDomains(t *testing.T) {
	got := searchDomains(testPN, testApp)
	want := []string{testApp + "." + testPN + ".private-network.internal", testPN + ".private-network.internal"}
	if !slices.Equal(got, want) {
		t.Fatalf("got %q, want %q", got, want)
	}
}

func TestQueue(t *testing.T) {
	q := queue{dir: t.TempDir() + "/pending-del", sock: "/run/a.sock"}
	other := queue{dir: q.dir, sock: "/run/b.sock"}
	if p, err := q.pending(); err != nil || len(p) != 0 {
		t.Fatalf("empty queue: %v %v", p, err)
	}
	a := control.CNIAttachment{ContainerID: "c1", Network: "n", IfName: "eth1"}
	for range 2 { // the same deletion twice is one entry
		if err := q.add(a); err != nil {
			t.Fatal(err)
		}
	}
	if err := other.add(a); err != nil {
		t.Fatal(err)
	}
	p, err := q.pending()
	if err != nil || len(p) != 1 || p[0].CNI != a || p[0].Control != q.sock {
		t.Fatalf("pending %+v %v", p, err)
	}
	if err := q.forget(a); err != nil {
		t.Fatal(err)
	}
	if err := q.forget(a); err != nil {
		t.Fatalf("forget twice: %v", err)
	}
	if p, _ := q.pending(); len(p) != 0 {
		t.Fatalf("after forget: %+v", p)
	}
	if p, _ := other.pending(); len(p) != 1 {
		t.Fatalf("another daemon's queue lost its entry: %+v", p)
	}
}
