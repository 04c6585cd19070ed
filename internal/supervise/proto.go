package supervise

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"golang.org/x/sys/unix"

	"github.com/vrouter/vrouter/internal/control"
)

// Port is everything a worker needs to rebuild one attached port from its
// fd alone: the container as the control socket describes it (id,
// network, app, type, number, address, MTU, interface, netns, CNI names)
// and the TUN's offload mode, checked against the fd when it comes back.
type Port struct {
	control.Container
	VnetHdr bool   `json:"vnet_hdr"` // IFF_VNET_HDR: the port runs with TSO/checksum offload
	VNI     uint32 `json:"vni"`      // the network's VNI claim (records.ClaimVNI) when it was attached
}

// Life is what a worker keeps across restarts so that other nodes see the
// same node: its gossip and WireGuard ports (which --gossip/--listen port
// 0 would otherwise pick anew) and the gossip addresses of the peers it
// knew, to rejoin at once even when it was the cluster's seed.
type Life struct {
	GossipPort uint16   `json:"gossip_port"`
	ListenPort uint16   `json:"listen_port"`
	Peers      []string `json:"peers,omitempty"`
	PeerNames  []string `json:"peer_names,omitempty"` // the same peers' node names
	// BootID and Started name the cluster life of the worker (see
	// cluster.New): a worker that follows a recent one resumes it, so
	// peers keep its records rather than swap them for a new life's.
	BootID  uint64 `json:"boot_id,omitempty"`
	Started int64  `json:"started,omitempty"`
}

// Handover is the supervisor's last message to a starting worker, after
// one "port" message per held port.
type Handover struct {
	SupervisorPID int       `json:"supervisor_pid"`
	Restarts      int       `json:"restarts"`   // workers started after the first
	StartedAt     time.Time `json:"started_at"` // when the supervisor started
	LastExit      string    `json:"last_exit,omitempty"`
	DiedAt        time.Time `json:"died_at,omitzero"`          // when the last worker ended (crash or upgrade)
	Backoff       float64   `json:"backoff_seconds,omitempty"` // wait before this start (a crash loop)
	CrashLoop     bool      `json:"crash_loop,omitempty"`
	Upgrades      int       `json:"upgrades"`
	Attempts      int       `json:"upgrade_attempts"`       // upgrades finished, successful or not
	LastUpgrade   string    `json:"last_upgrade,omitempty"` // "ok" or why the last one failed
	Life          *Life     `json:"life,omitempty"`
	Dropped       []string  `json:"dropped,omitempty"` // ports whose handover failed, closed
	// Standby asks the worker to stop after checking its configuration
	// and report "standby": the first half of an upgrade.
	Standby bool `json:"standby,omitempty"`
}

// Message ops.
const (
	opPort     = "port"     // supervisor → worker: one held port, with its fd
	opHandover = "handover" // supervisor → worker: end of the handover
	opGo       = "go"       // supervisor → standby worker: the old one is gone, take over
	opStop     = "stop"     // supervisor → worker: stop, leave ports and records alone
	opHold     = "hold"     // worker → supervisor: keep a dup of this port's fd
	opRelease  = "release"  // worker → supervisor: the port is detached, close its fd
	opLife     = "life"     // worker → supervisor: what to keep for the next worker
	opReady    = "ready"    // worker → supervisor: every handed-over port is restored
	opStandby  = "standby"  // standby worker → supervisor: configuration checked
	opUpgrade  = "upgrade"  // worker → supervisor: start an upgrade (vrouter upgrade)
	opReply    = "reply"    // answer to hold, release, life, upgrade
)

// message is one SOCK_SEQPACKET datagram on the supervisor link: JSON with
// at most one fd (a port's) as SCM_RIGHTS.
type message struct {
	Op       string    `json:"op"`
	Port     *Port     `json:"port,omitempty"`
	ID       string    `json:"id,omitempty"`
	Life     *Life     `json:"life,omitempty"`
	Handover *Handover `json:"handover,omitempty"`
	Binary   string    `json:"binary,omitempty"`
	Error    string    `json:"error,omitempty"`
	Version  string    `json:"version,omitempty"`
}

// maxMessage bounds a message; a port's state is well under 4 KiB.
const maxMessage = 64 << 10

// socketpair returns the two ends of a new link.
func socketpair() (*net.UnixConn, *os.File, error) {
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return nil, nil, fmt.Errorf("socketpair: %w", err)
	}
	mine := os.NewFile(uintptr(fds[0]), "supervisor-link")
	theirs := os.NewFile(uintptr(fds[1]), "worker-link")
	c, err := fileConn(mine)
	if err != nil {
		theirs.Close()
		return nil, nil, err
	}
	return c, theirs, nil
}

// fileConn turns a link fd into a conn; f is closed (the conn has a dup).
func fileConn(f *os.File) (*net.UnixConn, error) {
	defer f.Close()
	c, err := net.FileConn(f)
	if err != nil {
		return nil, fmt.Errorf("supervisor link: %w", err)
	}
	uc, ok := c.(*net.UnixConn)
	if !ok {
		c.Close()
		return nil, errors.New("supervisor link: not a unix socket")
	}
	return uc, nil
}

func send(c *net.UnixConn, m *message, f *os.File) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	var oob []byte
	if f != nil {
		oob = unix.UnixRights(int(f.Fd()))
	}
	if _, _, err := c.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("send %s: %w", m.Op, err)
	}
	return nil
}

// recv reads one message and the fd it carries, if any. A message with
// more than one fd, or cut short, is refused (its fds closed).
func recv(c *net.UnixConn, buf, oob []byte) (*message, *os.File, error) {
	n, oobn, flags, _, err := c.ReadMsgUnix(buf, oob)
	if err != nil {
		return nil, nil, err
	}
	if n == 0 && oobn == 0 {
		return nil, nil, errEOF
	}
	var files []*os.File
	if oobn > 0 {
		cms, perr := unix.ParseSocketControlMessage(oob[:oobn])
		if perr != nil {
			return nil, nil, fmt.Errorf("control message: %w", perr)
		}
		for _, cm := range cms {
			fds, _ := unix.ParseUnixRights(&cm)
			for _, fd := range fds {
				files = append(files, os.NewFile(uintptr(fd), "port"))
			}
		}
	}
	closeAll := func() {
		for _, f := range files {
			f.Close()
		}
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 || len(files) > 1 {
		closeAll()
		return nil, nil, errors.New("message truncated or with more than one fd")
	}
	m := new(message)
	if err := json.Unmarshal(buf[:n], m); err != nil {
		closeAll()
		return nil, nil, fmt.Errorf("decode message: %w", err)
	}
	var f *os.File
	if len(files) == 1 {
		f = files[0]
	}
	return m, f, nil
}

var errEOF = errors.New("link closed")

func newBufs() (buf, oob []byte) {
	return make([]byte, maxMessage), make([]byte, unix.CmsgSpace(4*4))
}
