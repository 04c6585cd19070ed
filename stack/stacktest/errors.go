package stacktest

import (
	"errors"
	"syscall"

	"gvisor.dev/gvisor/pkg/tcpip"
)

const errHostUnreachable = syscall.EHOSTUNREACH

// netstackError converts a tcpip.Error at the package boundary. The common
// connect failures become the errno a kernel socket would report, so tests
// can use errors.Is(err, syscall.ECONNREFUSED) and the like.
func netstackError(err tcpip.Error) error {
	switch err.(type) {
	case *tcpip.ErrHostUnreachable:
		return syscall.EHOSTUNREACH
	case *tcpip.ErrNetworkUnreachable:
		return syscall.ENETUNREACH
	case *tcpip.ErrConnectionRefused:
		return syscall.ECONNREFUSED
	case *tcpip.ErrConnectionReset:
		return syscall.ECONNRESET
	case *tcpip.ErrTimeout:
		return syscall.ETIMEDOUT
	case *tcpip.ErrPortInUse:
		return syscall.EADDRINUSE
	case *tcpip.ErrClosedForSend, *tcpip.ErrClosedForReceive:
		return syscall.EPIPE
	default:
		return errors.New(err.String())
	}
}
