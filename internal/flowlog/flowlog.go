// Package flowlog writes one JSON line per flow (`vrouter run --flow-log`)
// from the router's FlowTable. The packet path only adds to the table's
// atomics; this package's one goroutine sweeps the table once a second,
// describes both ends of each ended flow (network, app, container, node)
// through the daemon, and appends the records to a file rotated by size
// or to stdout. Memory is bounded by the table's size: flows that find no
// slot are counted (router.FlowTableStats.Dropped), never queued.
package flowlog

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/vrouter/vrouter/router"
)

// Defaults of Config.
const (
	DefaultMaxSize = 100 << 20
	DefaultIdle    = 60 * time.Second
	DefaultClosed  = 5 * time.Second
	DefaultTick    = time.Second
)

// Endpoint describes one end of a flow as the daemon knows it. Zero
// fields are unknown (a container detached since, an address outside).
type Endpoint struct {
	App, Type, Container, Node string
}

// Describer names what the table knows only as numbers. Both methods are
// called on the logger's goroutine.
type Describer interface {
	// Network returns the PN id of a VNI ("" if unknown).
	Network(vni uint32) string
	// Endpoint describes the container at ip in network pn; ok false if
	// there is none (the address is outside the network's range, or the
	// container is gone).
	Endpoint(pn string, ip netip.Addr) (e Endpoint, ok bool)
	// EgressSource returns how a container of app leaves the network:
	// dedicated true and the app's egress IP, or node egress (false).
	EgressSource(app string) (dedicated bool, ip netip.Addr)
}

// Config configures a Logger.
type Config struct {
	Path     string // file to append to; "-" is stdout
	MaxSize  int64  // rotate the file when it would grow past this; 0: DefaultMaxSize
	Table    *router.FlowTable
	Describe Describer
	Idle     time.Duration // a flow silent this long ends (idle); 0: DefaultIdle
	Closed   time.Duration // a TCP flow closed (FIN both ways, RST) and silent this long ends; 0: DefaultClosed
	Tick     time.Duration // sweep interval; 0: DefaultTick
	Logger   *slog.Logger
	// Stdout replaces os.Stdout for Path "-" (tests).
	Stdout io.Writer
}

// Record is one line of the flow log. Src is the end that sent the first
// packet. Out counts Src → Dst, In the replies.
type Record struct {
	Start           time.Time `json:"start"`
	End             time.Time `json:"end"`
	DurationSeconds float64   `json:"duration_seconds"`
	EndReason       string    `json:"end_reason"` // fin, rst, idle, shutdown
	Proto           string    `json:"proto"`      // tcp, udp, icmp or the protocol number
	Network         string    `json:"network"`
	Src             End       `json:"src"`
	Dst             End       `json:"dst"`
	PacketsOut      uint64    `json:"packets_out"`
	BytesOut        uint64    `json:"bytes_out"`
	PayloadOut      uint64    `json:"payload_bytes_out"`
	PacketsIn       uint64    `json:"packets_in"`
	BytesIn         uint64    `json:"bytes_in"`
	PayloadIn       uint64    `json:"payload_bytes_in"`
	// Egress is set for flows leaving the private network.
	Egress *Egress `json:"egress,omitempty"`
}

// End is one end of a Record.
type End struct {
	Addr      string `json:"addr"`
	Port      uint16 `json:"port,omitempty"` // ICMP echo: the ident
	App       string `json:"app,omitempty"`
	Type      string `json:"type,omitempty"`
	Container string `json:"container,omitempty"`
	Node      string `json:"node,omitempty"`
	Outside   bool   `json:"outside,omitempty"` // not an address of the private network
}

// Egress says how an outside flow left: via "node" (the node's own
// address) or "dedicated" (the app's gateways), and the source address
// the outside saw: for node egress the address the node's kernel picks
// for the destination, for dedicated egress the app's egress IP.
type Egress struct {
	Via    string `json:"via"`
	Source string `json:"source,omitempty"`
}

// Stats are the logger's counters.
type Stats struct {
	Records     uint64 // lines written
	WriteErrors uint64 // lines lost to write errors
	Rotations   uint64
}

// Logger is the flow log's goroutine and file.
type Logger struct {
	cfg  Config
	log  *slog.Logger
	out  io.Writer // one Write per line, so a rotation never splits one
	file *rotator  // nil for stdout

	stop chan struct{}
	done chan struct{}
	once sync.Once
	err  error

	records, writeErrors atomic.Uint64
}

// Start opens the log and starts sweeping cfg.Table.
func Start(cfg Config) (*Logger, error) {
	if cfg.Table == nil || cfg.Describe == nil {
		return nil, errors.New("flow log: no table or describer")
	}
	if cfg.Path == "" {
		return nil, errors.New("flow log: no path")
	}
	if cfg.MaxSize <= 0 {
		cfg.MaxSize = DefaultMaxSize
	}
	if cfg.Idle <= 0 {
		cfg.Idle = DefaultIdle
	}
	if cfg.Closed <= 0 {
		cfg.Closed = DefaultClosed
	}
	if cfg.Tick <= 0 {
		cfg.Tick = DefaultTick
	}
	l := &Logger{cfg: cfg, log: cfg.Logger, stop: make(chan struct{}), done: make(chan struct{})}
	if l.log == nil {
		l.log = slog.New(slog.DiscardHandler)
	}
	if cfg.Path == "-" {
		w := cfg.Stdout
		if w == nil {
			w = os.Stdout
		}
		l.out = w
	} else {
		r, err := openRotator(cfg.Path, cfg.MaxSize)
		if err != nil {
			return nil, err
		}
		l.file = r
		l.out = r
	}
	go l.run()
	return l, nil
}

func (l *Logger) run() {
	defer close(l.done)
	t := time.NewTicker(l.cfg.Tick)
	defer t.Stop()
	for {
		select {
		case <-l.stop:
			return
		case <-t.C:
			l.sweep(false)
		}
	}
}

func (l *Logger) sweep(flush bool) {
	l.cfg.Table.Sweep(router.SweepConfig{Idle: l.cfg.Idle, Closed: l.cfg.Closed, Flush: flush, Reports: l.write})
}

// write turns a flow into a line.
func (l *Logger) write(f router.Flow) {
	rec := l.record(f)
	b, err := json.Marshal(rec)
	if err != nil {
		l.writeErrors.Add(1)
		return
	}
	b = append(b, '\n')
	if _, err := l.out.Write(b); err != nil {
		if l.writeErrors.Add(1) == 1 {
			l.log.Warn("flow log: write failed; counting lost records", "path", l.cfg.Path, "err", err)
		}
		return
	}
	l.records.Add(1)
}

func (l *Logger) record(f router.Flow) Record {
	d := l.cfg.Describe
	pn := d.Network(f.VNI)
	rec := Record{
		Start: f.Start.UTC(), End: f.End.UTC(), DurationSeconds: f.End.Sub(f.Start).Seconds(),
		EndReason: f.Reason, Proto: protoName(f.Proto), Network: pn,
		PacketsOut: f.PacketsOut, BytesOut: f.BytesOut, PayloadOut: f.PayloadOut,
		PacketsIn: f.PacketsIn, BytesIn: f.BytesIn, PayloadIn: f.PayloadIn,
	}
	if rec.EndReason == "flush" {
		rec.EndReason = "shutdown"
	}
	if rec.Network == "" {
		rec.Network = fmt.Sprintf("vni-%d", f.VNI)
	}
	end := func(ap netip.AddrPort) End {
		e := End{Addr: ap.Addr().String(), Port: ap.Port()}
		if !router.NetworkPrefix.Contains(ap.Addr()) {
			e.Outside = true
			return e
		}
		if pn != "" {
			if de, ok := d.Endpoint(pn, ap.Addr()); ok {
				e.App, e.Type, e.Container, e.Node = de.App, de.Type, de.Container, de.Node
			}
		}
		return e
	}
	rec.Src, rec.Dst = end(f.Src), end(f.Dst)
	if rec.Dst.Outside && !rec.Src.Outside {
		rec.Egress = l.egress(rec.Src.App, f.Dst, f.Proto)
	}
	return rec
}

func (l *Logger) egress(app string, dst netip.AddrPort, proto uint8) *Egress {
	if app != "" {
		if dedicated, ip := l.cfg.Describe.EgressSource(app); dedicated {
			e := &Egress{Via: "dedicated"}
			if ip.IsValid() {
				e.Source = ip.String()
			}
			return e
		}
	}
	e := &Egress{Via: "node"}
	if src, ok := routeSource(dst); ok {
		e.Source = src.String()
	}
	return e
}

// routeSource asks the kernel which source address a socket of this host
// would use towards dst, as node egress dials do: a connected UDP socket
// sends nothing, it only routes.
func routeSource(dst netip.AddrPort) (netip.Addr, bool) {
	port := dst.Port()
	if port == 0 {
		port = 9 // ICMP: any port routes the same
	}
	c, err := net.DialUDP("udp4", nil, net.UDPAddrFromAddrPort(netip.AddrPortFrom(dst.Addr(), port)))
	if err != nil {
		return netip.Addr{}, false
	}
	defer c.Close()
	a := c.LocalAddr().(*net.UDPAddr).AddrPort().Addr()
	return a.Unmap(), true
}

func protoName(p uint8) string {
	switch p {
	case 6:
		return "tcp"
	case 17:
		return "udp"
	case 1:
		return "icmp"
	}
	return fmt.Sprint(p)
}

// Stats returns the logger's counters.
func (l *Logger) Stats() Stats {
	s := Stats{Records: l.records.Load(), WriteErrors: l.writeErrors.Load()}
	if l.file != nil {
		s.Rotations = l.file.rotations.Load()
	}
	return s
}

// Close stops the sweeps, writes every flow still in the table (end
// reason shutdown) and closes the file. Stop the packet path's use of the
// table first (Router.EnableFlows(nil)). Later calls return the first
// result.
func (l *Logger) Close() error {
	l.once.Do(func() {
		close(l.stop)
		<-l.done
		l.sweep(true)
		if l.file != nil {
			l.err = l.file.Close()
		}
	})
	return l.err
}
