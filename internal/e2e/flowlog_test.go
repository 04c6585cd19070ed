//go:build e2e

package e2e

import (
	"bufio"
	"encoding/json"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/vrouter/vrouter/internal/poll"
)

// flowRecord is the part of a flow log line the tests read.
type flowRecord struct {
	EndReason  string  `json:"end_reason"`
	Proto      string  `json:"proto"`
	Network    string  `json:"network"`
	Src        flowEnd `json:"src"`
	Dst        flowEnd `json:"dst"`
	PacketsOut uint64  `json:"packets_out"`
	BytesOut   uint64  `json:"bytes_out"`
	PayloadOut uint64  `json:"payload_bytes_out"`
	PacketsIn  uint64  `json:"packets_in"`
	BytesIn    uint64  `json:"bytes_in"`
	PayloadIn  uint64  `json:"payload_bytes_in"`
	Egress     *struct {
		Via    string `json:"via"`
		Source string `json:"source"`
	} `json:"egress"`
}

type flowEnd struct {
	Addr      string `json:"addr"`
	Port      uint16 `json:"port"`
	App       string `json:"app"`
	Type      string `json:"type"`
	Container string `json:"container"`
	Node      string `json:"node"`
	Outside   bool   `json:"outside"`
}

func readFlowLog(t *testing.T, path string) []flowRecord {
	t.Helper()
	f, err := os.Open(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []flowRecord
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r flowRecord
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			t.Fatalf("flow log line %q: %v", sc.Text(), err)
		}
		out = append(out, r)
	}
	return out
}

// waitFlow waits for the record of the flow to dst (addr, port) with proto.
func waitFlow(t *testing.T, path, proto, addr string, port uint16) flowRecord {
	t.Helper()
	var found flowRecord
	poll.UntilNil(t, 30*time.Second, "the flow's record", func() error {
		for _, r := range readFlowLog(t, path) {
			if r.Proto == proto && r.Dst.Addr == addr && r.Dst.Port == port {
				found = r
				return nil
			}
		}
		return errors.New("not logged yet")
	})
	return found
}

// TestFlowLog: a TCP transfer between two containers and one out through
// node egress each get a flow log line from the unprivileged daemon, with
// both ends described, the byte counts of what was sent and the end
// reason; the egress flow names the source address the outside saw.
func TestFlowLog(t *testing.T) {
	need(t)
	in := startInternet(t)
	dir := newStateDir(t)
	path := filepath.Join(dir, "flows.jsonl")
	d := launchDaemon(t, dir, "--egress-allow-loopback", "--flow-log", path)
	d.waitRunning(t)
	pn, app := newID("pn"), newID("ap")
	a, b := newNetns(t), newNetns(t)
	ca := d.attach(t, a, pn, app, "web")
	cb := d.attach(t, b, pn, app, "worker")

	const size, port = 2 << 20, 5002
	tcpTransfer(t, a, b, cb.IP, port, size)
	r := waitFlow(t, path, "tcp", cb.IP, port)
	t.Logf("flow record: %+v", r)
	if r.EndReason != "fin" || r.Network != pn {
		t.Errorf("end reason %q, network %q; want fin, %s", r.EndReason, r.Network, pn)
	}
	wantSrc := flowEnd{Addr: ca.IP, Port: r.Src.Port, App: app, Type: "web", Container: ca.ID, Node: nodeName}
	wantDst := flowEnd{Addr: cb.IP, Port: port, App: app, Type: "worker", Container: cb.ID, Node: nodeName}
	if r.Src != wantSrc || r.Dst != wantDst {
		t.Errorf("ends %+v → %+v\nwant %+v → %+v", r.Src, r.Dst, wantSrc, wantDst)
	}
	// The payload A sent is the file, plus what TCP retransmitted (rare on
	// one host); B sent none back.
	if r.PayloadOut < size || r.PayloadOut > size+size/50 || r.PayloadIn != 0 {
		t.Errorf("payload bytes out %d, in %d; want %d (+2%% retransmits), 0", r.PayloadOut, r.PayloadIn, size)
	}
	if r.BytesOut <= r.PayloadOut || r.PacketsIn == 0 || r.BytesIn < 40*r.PacketsIn {
		t.Errorf("IP bytes out %d, in %d in %d packets: headers missing", r.BytesOut, r.BytesIn, r.PacketsIn)
	}

	loopbackOut(t, a)
	tcpThrough(t, a, in, 64<<10)
	host, p, _ := net.SplitHostPort(in.tcp)
	pp, _ := strconv.Atoi(p)
	e := waitFlow(t, path, "tcp", host, uint16(pp))
	t.Logf("egress flow record: %+v", e)
	if !e.Dst.Outside || e.Src.Container != ca.ID || e.PayloadOut < 64<<10 {
		t.Errorf("egress flow %+v", e)
	}
	if e.Egress == nil || e.Egress.Via != "node" || e.Egress.Source != "127.0.0.1" {
		t.Errorf("egress %+v, want via node from 127.0.0.1 (what the loopback server saw)", e.Egress)
	}
}
