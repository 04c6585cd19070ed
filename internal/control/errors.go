package control

import (
	"errors"
	"fmt"
)

// Code is the machine-readable kind of an Error. The daemon chooses codes
// only from the constants below, so that clients (and docs/control-protocol.md)
// can rely on the list being complete.
type Code string

// Error codes carried in Response.Error.Code.
const (
	CodeBadRequest Code = "bad_request" // malformed message, wrong body, extra fds
	CodeVersion    Code = "version"     // unsupported protocol version
	CodeInvalid    Code = "invalid"     // well-formed request with invalid values
	CodeNotFound   Code = "not_found"
	CodeConflict   Code = "conflict"
	CodeFull       Code = "full"
	CodeInternal   Code = "internal"
	// CodeUnavailable: the cluster cannot do it now (too few gateways with
	// a free egress IP, a gateway that does not answer in time).
	CodeUnavailable Code = "unavailable"
	// CodeForbidden: the client's user may not use this daemon (only
	// root and the daemon's own user may).
	CodeForbidden Code = "forbidden"
)

// Error is a protocol-level error. Handlers return it to choose the code the
// client sees; Call returns it when the daemon answered with an error.
type Error struct {
	Code    Code   `json:"code"`
	Message string `json:"message"`
}

func (e *Error) Error() string { return e.Message }

// Errorf builds an *Error with the given code.
func Errorf(code Code, format string, args ...any) *Error {
	return &Error{Code: code, Message: fmt.Sprintf(format, args...)}
}

var (
	// ErrNoDaemon means no daemon listens on the control socket (missing
	// socket file or connection refused).
	ErrNoDaemon = errors.New("daemon not running")
	// ErrInUse means Listen found a live daemon answering on the socket.
	ErrInUse = errors.New("control socket in use")
)

// msgError carries an exact user-facing message while still matching a
// sentinel with errors.Is.
type msgError struct {
	msg string
	err error
}

func (e *msgError) Error() string { return e.msg }
func (e *msgError) Unwrap() error { return e.err }
