package control

import (
	"bytes"
	"encoding/json"
	"errors"
	"io"
)

// MaxMessage is the largest request message and the largest packet of a
// response (a response may span several packets, see doc.go).
const MaxMessage = 64 << 10

// DecodeRequest parses and validates one request message. Errors are *Error
// with code "version" (any version but 1) or "bad_request" (malformed JSON,
// unknown fields, trailing data, unknown op, missing or extra body).
func DecodeRequest(b []byte) (*Request, error) {
	if len(b) > MaxMessage {
		return nil, Errorf(CodeBadRequest, "request of %d bytes exceeds %d", len(b), MaxMessage)
	}
	// The version is checked first and leniently, so that a newer client
	// gets "version" rather than "unknown field" for fields it added.
	var v struct {
		Version *int `json:"version"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return nil, Errorf(CodeBadRequest, "malformed request: %v", err)
	}
	if v.Version == nil {
		return nil, Errorf(CodeBadRequest, "request has no version")
	}
	if *v.Version != Version {
		return nil, Errorf(CodeVersion, "unsupported protocol version %d (this daemon speaks %d)", *v.Version, Version)
	}

	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var req Request
	if err := dec.Decode(&req); err != nil {
		return nil, Errorf(CodeBadRequest, "malformed request: %v", err)
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, Errorf(CodeBadRequest, "malformed request: trailing data after the JSON object")
	}
	if err := checkBody(&req); err != nil {
		return nil, err
	}
	return &req, nil
}

// checkBody requires exactly the body that belongs to the op.
func checkBody(req *Request) error {
	var wantAttach, wantDetach, wantNames, wantEgress, wantGateway, wantUnpin, wantUpgrade bool
	switch req.Op {
	case OpAttach:
		wantAttach = true
	case OpDetach:
		wantDetach = true
	case OpNames:
		wantNames = true
	case OpEgress:
		wantEgress = true
	case OpGateway:
		wantGateway = true
	case OpUnpin:
		wantUnpin = true
	case OpUpgrade:
		wantUpgrade = true
	case OpContainers, OpStatus, OpPeers:
	case "":
		return Errorf(CodeBadRequest, "request has no op")
	default:
		return Errorf(CodeBadRequest, "unknown op %q", req.Op)
	}
	if (req.Attach != nil) != wantAttach {
		if wantAttach {
			return Errorf(CodeBadRequest, "op %q needs an attach body", req.Op)
		}
		return Errorf(CodeBadRequest, "op %q takes no attach body", req.Op)
	}
	if (req.Detach != nil) != wantDetach {
		if wantDetach {
			return Errorf(CodeBadRequest, "op %q needs a detach body", req.Op)
		}
		return Errorf(CodeBadRequest, "op %q takes no detach body", req.Op)
	}
	if (req.Names != nil) != wantNames {
		if wantNames {
			return Errorf(CodeBadRequest, "op %q needs a names body", req.Op)
		}
		return Errorf(CodeBadRequest, "op %q takes no names body", req.Op)
	}
	if (req.Egress != nil) != wantEgress {
		if wantEgress {
			return Errorf(CodeBadRequest, "op %q needs an egress body", req.Op)
		}
		return Errorf(CodeBadRequest, "op %q takes no egress body", req.Op)
	}
	if (req.Gateway != nil) != wantGateway {
		if wantGateway {
			return Errorf(CodeBadRequest, "op %q needs a gateway body", req.Op)
		}
		return Errorf(CodeBadRequest, "op %q takes no gateway body", req.Op)
	}
	if (req.Unpin != nil) != wantUnpin {
		if wantUnpin {
			return Errorf(CodeBadRequest, "op %q needs an unpin body", req.Op)
		}
		return Errorf(CodeBadRequest, "op %q takes no unpin body", req.Op)
	}
	if (req.Upgrade != nil) != wantUpgrade {
		if wantUpgrade {
			return Errorf(CodeBadRequest, "op %q needs an upgrade body", req.Op)
		}
		return Errorf(CodeBadRequest, "op %q takes no upgrade body", req.Op)
	}
	return nil
}

// takesFD reports whether op may carry a file descriptor.
func takesFD(op string) bool { return op == OpAttach }
