package stack

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/poll"
)

// TestEgressTCPTimeWaitReuse: when the destination closes first, the
// stack closes first towards the container and keeps the connection in
// TIME_WAIT. A container that connects again from the same port (Linux
// does for loopback destinations after 1 s, and any client once its port
// range wraps) must get through: gVisor drops a SYN that meets a TIME_WAIT
// endpoint when no listener owns the address, so TIME_WAIT has to end
// quickly (tcpTimeWait) rather than after gVisor's 60 s.
func TestEgressTCPTimeWaitReuse(t *testing.T) {
	s, cs := newEgressNet(t, EgressConfig{AllowLoopback: true}, nil, nil, "10.240.0.7")
	dst := listenTCP(t, func(c *net.TCPConn) {
		defer c.Close()
		var b [1]byte
		if _, err := io.ReadFull(c, b[:]); err == nil {
			c.Write(b[:])
		}
	})
	const port = 40123
	exchange := func(what string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		conn, err := cs[0].DialTCPFrom(ctx, port, inetPort(dst))
		if err != nil {
			t.Fatalf("%s: dial from port %d: %v", what, port, err)
		}
		defer conn.Close()
		conn.SetDeadline(time.Now().Add(3 * time.Second))
		if _, err := conn.Write([]byte{'x'}); err != nil {
			t.Fatalf("%s: write: %v", what, err)
		}
		// The byte, then the destination's FIN: the container closes
		// second, so the stack is the one in TIME_WAIT.
		got, err := io.ReadAll(conn)
		if err != nil || string(got) != "x" {
			t.Fatalf("%s: read %q, %v; want \"x\" then EOF", what, got, err)
		}
	}
	idle := len(s.stack.RegisteredEndpoints())
	exchange("first connection")
	// Both the proxy's endpoint and its TIME_WAIT must be gone well before
	// gVisor's default 60 s.
	start := time.Now()
	poll.Until(t, 5*time.Second, "the connection's endpoint to leave TIME_WAIT", func() bool {
		return len(s.stack.RegisteredEndpoints()) == idle
	})
	if d := time.Since(start); d > 2*tcpTimeWait+time.Second {
		t.Errorf("TIME_WAIT lasted %v, want about %v", d, tcpTimeWait)
	}
	exchange("second connection from the same port")
	poll.Until(t, 5*time.Second, "the flows to end", func() bool { return s.EgressStats().TCPActive == 0 })
	if st := s.EgressStats(); st.TCPDials != 2 || st.TCPFailed != 0 {
		t.Errorf("stats %+v, want 2 dials, none failed", st)
	}
}
