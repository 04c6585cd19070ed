package supervise

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// HeldPort is a port handed over by the supervisor: its state and fd.
type HeldPort struct {
	Port Port
	File *os.File
}

// Link is a worker's end of the supervisor link.
type Link struct {
	conn *net.UnixConn
	buf  []byte
	oob  []byte

	reqMu   sync.Mutex // one request at a time: replies come in order
	replies chan *message
	info    atomic.Pointer[Handover]
	stop    chan struct{} // closed on the supervisor's "stop"
	gone    chan struct{} // closed when the link ends
	done    chan struct{} // closed when the reader returns
	started bool
}

// FromEnv returns the link the supervisor passed, or nil when this
// process is not a supervised worker.
func FromEnv() (*Link, error) {
	v := os.Getenv(Env)
	if v == "" {
		return nil, nil
	}
	os.Unsetenv(Env) // not for the processes this one starts (attach --userns helpers)
	fd, err := strconv.Atoi(v)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%s=%q: want an fd number", Env, v)
	}
	c, err := fileConn(os.NewFile(uintptr(fd), "supervisor-link"))
	if err != nil {
		return nil, err
	}
	buf, oob := newBufs()
	return &Link{conn: c, buf: buf, oob: oob, replies: make(chan *message, 1),
		stop: make(chan struct{}), gone: make(chan struct{}), done: make(chan struct{})}, nil
}

// Handover reads the held ports and the handover message. In standby (an
// upgrade's new worker) it returns no ports: the caller checks its
// configuration, calls Standby and then Handover again.
func (l *Link) Handover() ([]HeldPort, Handover, error) {
	var ports []HeldPort
	for {
		m, f, err := recv(l.conn, l.buf, l.oob)
		if err != nil {
			for _, p := range ports {
				p.File.Close()
			}
			return nil, Handover{}, fmt.Errorf("handover: %w", err)
		}
		switch m.Op {
		case opPort:
			if m.Port == nil || f == nil {
				if f != nil {
					f.Close()
				}
				continue
			}
			ports = append(ports, HeldPort{Port: *m.Port, File: f})
		case opHandover:
			if f != nil {
				f.Close()
			}
			if m.Handover == nil {
				return nil, Handover{}, errors.New("handover: empty")
			}
			h := *m.Handover
			l.info.Store(&h)
			return ports, h, nil
		case opStop:
			// Stopped before it took over (an upgrade given up).
			for _, p := range ports {
				p.File.Close()
			}
			return nil, Handover{}, errors.New("handover: stopped by the supervisor")
		default:
			if f != nil {
				f.Close()
			}
		}
	}
}

// Standby tells the supervisor that this (new) worker's configuration is
// good; it then hands over the ports once the old worker stopped.
func (l *Link) Standby(version string) error {
	return send(l.conn, &message{Op: opStandby, Version: version}, nil)
}

// Start starts the reader; after it, the link carries requests.
func (l *Link) Start() {
	l.started = true
	go l.read()
}

func (l *Link) read() {
	defer close(l.done)
	defer close(l.gone)
	stopped := false
	for {
		m, f, err := recv(l.conn, l.buf, l.oob)
		if err != nil {
			return
		}
		if f != nil {
			f.Close()
		}
		switch m.Op {
		case opReply:
			select {
			case l.replies <- m:
			default: // nobody asked: drop
			}
		case opHandover:
			if m.Handover != nil {
				h := *m.Handover
				l.info.Store(&h)
			}
		case opStop:
			if !stopped {
				stopped = true
				close(l.stop)
			}
		}
	}
}

// request sends m and waits for the reply.
func (l *Link) request(m *message, f *os.File) (*message, error) {
	l.reqMu.Lock()
	defer l.reqMu.Unlock()
	if err := send(l.conn, m, f); err != nil {
		return nil, fmt.Errorf("supervisor: %w", err)
	}
	select {
	case r := <-l.replies:
		if r.Error != "" {
			return r, fmt.Errorf("supervisor: %s", r.Error)
		}
		return r, nil
	case <-l.gone:
		return nil, errors.New("supervisor: link closed")
	case <-time.After(10 * time.Second):
		return nil, errors.New("supervisor: no reply in 10 s")
	}
}

// Hold gives the supervisor a dup of a port's fd (f stays the caller's).
func (l *Link) Hold(p Port, f *os.File) error {
	_, err := l.request(&message{Op: opHold, Port: &p}, f)
	return err
}

// Release tells the supervisor a port is detached: it closes its dup.
func (l *Link) Release(id string) error {
	_, err := l.request(&message{Op: opRelease, ID: id}, nil)
	return err
}

// SetLife stores what the next worker must keep.
func (l *Link) SetLife(life Life) error {
	_, err := l.request(&message{Op: opLife, Life: &life}, nil)
	return err
}

// Ready says every handed-over port is restored (or released).
func (l *Link) Ready() error {
	return send(l.conn, &message{Op: opReady}, nil)
}

// Upgrade asks the supervisor to upgrade to bin ("" for the configured
// binary path). It returns the attempt's number: status's
// upgrade_attempts reaches it once the attempt is over.
func (l *Link) Upgrade(bin string) (int, error) {
	r, err := l.request(&message{Op: opUpgrade, Binary: bin}, nil)
	if err != nil {
		return 0, err
	}
	if r.Handover == nil {
		return 0, errors.New("supervisor: upgrade reply without an attempt number")
	}
	return r.Handover.Attempts, nil
}

// Info is the supervisor's latest view (restarts, upgrades, ...).
func (l *Link) Info() Handover {
	if h := l.info.Load(); h != nil {
		return *h
	}
	return Handover{}
}

// Stopped is closed when the supervisor asks this worker to stop (an
// upgrade: leave ports and records alone).
func (l *Link) Stopped() <-chan struct{} { return l.stop }

// Gone is closed when the supervisor's end of the link closed.
func (l *Link) Gone() <-chan struct{} { return l.gone }

// Close closes the link and waits for the reader.
func (l *Link) Close() error {
	err := l.conn.Close()
	if l.started {
		<-l.done
	}
	return err
}
