package control

import (
	"encoding/json"
	"errors"
	"reflect"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

func TestDecodeRequest(t *testing.T) {
	tests := []struct {
		name string
		in   string
		code Code // "" = accepted
		want *Request
	}{
		{name: "status", in: `{"version":1,"op":"status"}`, want: &Request{Version: 1, Op: "status"}},
		{name: "containers", in: `{"version":1,"op":"containers"}`, want: &Request{Version: 1, Op: "containers"}},
		{name: "detach", in: `{"version":1,"op":"detach","detach":{"id":"c-0f3a9b2c41d7"}}`,
			want: &Request{Version: 1, Op: "detach", Detach: &DetachRequest{ID: "c-0f3a9b2c41d7"}}},
		{name: "attach", in: `{"version":1,"op":"attach","attach":{"network":"pn-x","app":"ap-y","type":"web","number":2,"ip":"10.240.0.3","container_key":"netns:4:1","interface":"vr0","netns":"/run/netns/a"}}`,
			want: &Request{Version: 1, Op: "attach", Attach: &AttachRequest{Network: "pn-x", App: "ap-y", Type: "web", Number: 2, IP: "10.240.0.3", ContainerKey: "netns:4:1", Interface: "vr0", Netns: "/run/netns/a"}}},
		{name: "unpin", in: `{"version":1,"op":"unpin","unpin":{"name":"n2"}}`,
			want: &Request{Version: 1, Op: "unpin", Unpin: &UnpinRequest{Name: "n2"}}},
		{name: "unpin without body", in: `{"version":1,"op":"unpin"}`, code: CodeBadRequest},
		{name: "status with unpin body", in: `{"version":1,"op":"status","unpin":{"name":"n2"}}`, code: CodeBadRequest},
		{name: "trailing space", in: "{\"version\":1,\"op\":\"status\"}\n ", want: &Request{Version: 1, Op: "status"}},
		{name: "version 2", in: `{"version":2,"op":"status"}`, code: CodeVersion},
		{name: "version 2 with new fields", in: `{"version":2,"op":"frobnicate","x":1}`, code: CodeVersion},
		{name: "version 0", in: `{"version":0,"op":"status"}`, code: CodeVersion},
		{name: "no version", in: `{"op":"status"}`, code: CodeBadRequest},
		{name: "not json", in: `hello`, code: CodeBadRequest},
		{name: "empty", in: ``, code: CodeBadRequest},
		{name: "array", in: `[1]`, code: CodeBadRequest},
		{name: "version string", in: `{"version":"1","op":"status"}`, code: CodeBadRequest},
		{name: "unknown field", in: `{"version":1,"op":"status","extra":true}`, code: CodeBadRequest},
		{name: "unknown attach field", in: `{"version":1,"op":"attach","attach":{"network":"n","bogus":1}}`, code: CodeBadRequest},
		{name: "trailing data", in: `{"version":1,"op":"status"}{}`, code: CodeBadRequest},
		{name: "unknown op", in: `{"version":1,"op":"reboot"}`, code: CodeBadRequest},
		{name: "no op", in: `{"version":1}`, code: CodeBadRequest},
		{name: "attach without body", in: `{"version":1,"op":"attach"}`, code: CodeBadRequest},
		{name: "attach null body", in: `{"version":1,"op":"attach","attach":null}`, code: CodeBadRequest},
		{name: "detach without body", in: `{"version":1,"op":"detach"}`, code: CodeBadRequest},
		{name: "status with body", in: `{"version":1,"op":"status","detach":{"id":"x"}}`, code: CodeBadRequest},
		{name: "attach with detach body", in: `{"version":1,"op":"attach","attach":{},"detach":{"id":"x"}}`, code: CodeBadRequest},
		{name: "number float", in: `{"version":1,"op":"attach","attach":{"number":1.5}}`, code: CodeBadRequest},
		{name: "too large", in: `{"version":1,"op":"status","x":"` + strings.Repeat("a", MaxMessage) + `"}`, code: CodeBadRequest},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := DecodeRequest([]byte(tt.in))
			if tt.code == "" {
				if err != nil {
					t.Fatalf("DecodeRequest: %v", err)
				}
				if !reflect.DeepEqual(got, tt.want) {
					t.Fatalf("got %+v, want %+v", got, tt.want)
				}
				return
			}
			var e *Error
			if !errors.As(err, &e) {
				t.Fatalf("err = %v (%T), want *Error code %q", err, err, tt.code)
			}
			if e.Code != tt.code {
				t.Fatalf("code = %q (%s), want %q", e.Code, e.Message, tt.code)
			}
			if got != nil {
				t.Fatalf("got a request with an error: %+v", got)
			}
		})
	}
}

func TestErrorJSON(t *testing.T) {
	b, err := json.Marshal(&Response{Version: 1, Error: Errorf(CodeConflict, "ip %s in use", "10.240.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"version":1,"error":{"code":"conflict","message":"ip 10.240.0.1 in use"}}`
	if string(b) != want {
		t.Fatalf("got %s, want %s", b, want)
	}
}

func FuzzDecodeRequest(f *testing.F) {
	for _, s := range []string{
		`{"version":1,"op":"status"}`,
		`{"version":1,"op":"containers"}`,
		`{"version":1,"op":"detach","detach":{"id":"c-0f3a9b2c41d7"}}`,
		`{"version":1,"op":"attach","attach":{"network":"pn-x","app":"ap-y","type":"web","number":2,"ip":"10.240.0.3","container_key":"netns:4:1","interface":"vr0","netns":"/run/netns/a"}}`,
		`{"version":2,"op":"status"}`,
		`{"version":1,"op":"attach","attach":{"NETWORK":"\u00e9\ud800"}}`,
		`{"version":1,"op":"status"}{}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		req, err := DecodeRequest(b)
		if err != nil {
			var e *Error
			if !errors.As(err, &e) || (e.Code != CodeBadRequest && e.Code != CodeVersion) {
				t.Fatalf("error %v (%T) is not a bad_request/version *Error", err, err)
			}
			return
		}
		again, err := json.Marshal(req)
		if err != nil {
			t.Fatalf("re-encode %+v: %v", req, err)
		}
		req2, err := DecodeRequest(again)
		if err != nil {
			t.Fatalf("re-encoded request %s rejected: %v", again, err)
		}
		if !reflect.DeepEqual(req, req2) {
			t.Fatalf("round trip changed the request:\n%+v\n%+v", req, req2)
		}
	})
}

// FuzzParseRights: the control messages of a request come from the client;
// parsing any bytes never panics and never yields more descriptors than
// the bytes can hold. (The pure parser: turning arbitrary numbers into
// files would close the fuzzer's own descriptors.)
func FuzzParseRights(f *testing.F) {
	f.Add(unix.UnixRights(3))
	f.Add(unix.UnixRights(3, 4, 5))
	f.Add(append(unix.UnixRights(7), unix.UnixRights(8)...))
	f.Add(unix.UnixCredentials(&unix.Ucred{Pid: 1}))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, oob []byte) {
		fds, _ := parseRightsFDs(oob)
		if len(fds) > len(oob)/4 {
			t.Fatalf("%d descriptors from %d bytes", len(fds), len(oob))
		}
	})
}
