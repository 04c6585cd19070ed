package porttest_test

import (
	"context"
	"errors"
	"os"
	"testing"
	"time"

	"github.com/vrouter/vrouter/router"
	"github.com/vrouter/vrouter/router/porttest"
)

func bufs(n int) [][]byte {
	b := make([][]byte, n)
	for i := range b {
		b[i] = make([]byte, router.Headroom+1500)
	}
	return b
}

func TestSendRead(t *testing.T) {
	p := porttest.New(2, 1500)
	for _, s := range []string{"a", "bb", "ccc"} {
		if err := p.Send([]byte(s)); err != nil {
			t.Fatal(err)
		}
	}
	b, sizes := bufs(2), make([]int, 2)
	n, err := p.Read(b, sizes, router.Headroom)
	if err != nil || n != 2 {
		t.Fatalf("Read = %d, %v; want 2 packets", n, err)
	}
	if string(b[0][router.Headroom:router.Headroom+sizes[0]]) != "a" || string(b[1][router.Headroom:router.Headroom+sizes[1]]) != "bb" {
		t.Errorf("batch = %q %q", b[0][router.Headroom:router.Headroom+sizes[0]], b[1][router.Headroom:router.Headroom+sizes[1]])
	}
	n, err = p.Read(b, sizes, router.Headroom)
	if err != nil || n != 1 || sizes[0] != 3 {
		t.Fatalf("second Read = %d, %v, size %d", n, err, sizes[0])
	}
	if err := p.Send(make([]byte, 1501)); err == nil {
		t.Error("Send accepted a packet larger than the MTU")
	}
}

func TestWriteRecv(t *testing.T) {
	p := porttest.New(1, 1500)
	pkt := append(make([]byte, router.Headroom), "hello"...)
	if n, err := p.Write([][]byte{pkt}, router.Headroom); n != 1 || err != nil {
		t.Fatalf("Write = %d, %v", n, err)
	}
	pkt[router.Headroom] = 'X' // Write must have copied
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	got, err := p.Recv(ctx)
	if err != nil || string(got) != "hello" {
		t.Fatalf("Recv = %q, %v", got, err)
	}
	short, cancel2 := context.WithTimeout(context.Background(), 10*time.Millisecond)
	defer cancel2()
	if _, err := p.Recv(short); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("Recv on an empty port = %v, want DeadlineExceeded", err)
	}
}

func TestWriteDropsWhenFull(t *testing.T) {
	p := porttest.New(1, 1500)
	pkt := make([]byte, router.Headroom+1)
	for i := 0; i < porttest.QueueLen+3; i++ {
		if _, err := p.Write([][]byte{pkt}, router.Headroom); err != nil {
			t.Fatal(err)
		}
	}
	if p.Dropped() != 3 {
		t.Errorf("Dropped = %d, want 3", p.Dropped())
	}
}

func TestClose(t *testing.T) {
	p := porttest.New(1, 1500)
	pkt := append(make([]byte, router.Headroom), 'x')
	p.Write([][]byte{pkt}, router.Headroom)

	readErr := make(chan error, 1)
	go func() {
		_, err := p.Read(bufs(1), make([]int, 1), router.Headroom)
		readErr <- err
	}()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	select {
	case err := <-readErr:
		if !errors.Is(err, os.ErrClosed) {
			t.Errorf("blocked Read returned %v, want os.ErrClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not unblock Read")
	}
	if !p.Closed() {
		t.Error("Closed() = false")
	}
	if err := p.Send([]byte{1}); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Send after Close = %v", err)
	}
	if _, err := p.Write([][]byte{pkt}, router.Headroom); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Write after Close = %v", err)
	}
	// What was written before Close can still be received, then ErrClosed.
	if got, err := p.Recv(context.Background()); err != nil || string(got) != "x" {
		t.Errorf("Recv of a pending packet = %q, %v", got, err)
	}
	if _, err := p.Recv(context.Background()); !errors.Is(err, os.ErrClosed) {
		t.Errorf("Recv after Close = %v, want os.ErrClosed", err)
	}
}
