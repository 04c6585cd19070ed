package control

import (
	"errors"
	"net/netip"
	"strings"
	"testing"
)

func TestAttachRequestValidate(t *testing.T) {
	const (
		pn  = "pn-0f3a9b2c-41d7-4a5e-9c1b-2d3e4f5a6b7c"
		app = "ap-1a2b3c4d-5e6f-4a7b-8c9d-0e1f2a3b4c5d"
	)
	tests := []struct {
		name string
		req  AttachRequest
		want netip.Addr
		err  string // "" = valid
	}{
		{name: "lowest free", req: AttachRequest{Network: pn, App: app, Type: "web"}},
		{name: "pinned", req: AttachRequest{Network: pn, App: app, Type: "db-2", Number: 3, IP: "10.240.3.254"}, want: netip.MustParseAddr("10.240.3.254")},
		{name: "bad network", req: AttachRequest{Network: "pn-1", App: app, Type: "web"}, err: `malformed network id "pn-1"`},
		{name: "bad app", req: AttachRequest{Network: pn, App: "AP-x", Type: "web"}, err: `malformed app id "AP-x"`},
		{name: "bad type", req: AttachRequest{Network: pn, App: app, Type: "Web"}, err: `container type "Web" must match`},
		{name: "cni", req: AttachRequest{Network: pn, App: app, Type: "web", CNI: &CNIAttachment{ContainerID: "c1", Network: "vr", IfName: "eth1"}}},
		{name: "cni field empty", req: AttachRequest{Network: pn, App: app, Type: "web", CNI: &CNIAttachment{ContainerID: "c1", Network: "vr"}}, err: "cni attachment: interface is empty"},
		{name: "negative number", req: AttachRequest{Network: pn, App: app, Type: "web", Number: -1}, err: "container number -1 must be positive"},
		{name: "ip not an address", req: AttachRequest{Network: pn, App: app, Type: "web", IP: "10.240.0"}, err: `ip "10.240.0" is not an IPv4 address`},
		{name: "ip outside", req: AttachRequest{Network: pn, App: app, Type: "web", IP: "10.240.4.1"}, err: `ip "10.240.4.1" is outside 10.240.0.1-10.240.3.254`},
		{name: "network address", req: AttachRequest{Network: pn, App: app, Type: "web", IP: "10.240.0.0"}, err: "is outside"},
		{name: "broadcast", req: AttachRequest{Network: pn, App: app, Type: "web", IP: "10.240.3.255"}, err: "is outside"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.req.Validate()
			if tt.err == "" {
				if err != nil || got != tt.want {
					t.Fatalf("Validate() = %v, %v; want %v, nil", got, err, tt.want)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) || e.Code != CodeInvalid || !strings.Contains(e.Message, tt.err) {
				t.Fatalf("Validate() error = %v; want code %s containing %q", err, CodeInvalid, tt.err)
			}
			if got.IsValid() {
				t.Errorf("Validate() returned %v with its error", got)
			}
		})
	}
}
