//go:build e2e

package e2e

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"
	"time"
)

// bgProc is a program running inside a namespace in the background (a
// server); the test's cleanup kills it by PID if it is still running.
type bgProc struct {
	cmd  *exec.Cmd
	out  *syncBuffer
	done chan struct{}
	err  error // set before done is closed
}

// startBG starts args inside ns with stdin (nil for /dev/null) and stdout
// (nil to collect it in out).
func startBG(t *testing.T, ns *netns, stdin io.Reader, stdout io.Writer, args ...string) *bgProc {
	t.Helper()
	p := &bgProc{out: &syncBuffer{}, done: make(chan struct{})}
	// ip netns exec execs the program, so the PID is the server's own.
	p.cmd = exec.Command("ip", append([]string{"netns", "exec", ns.name}, args...)...)
	p.cmd.Stdin = stdin
	p.cmd.Stdout = stdout
	if stdout == nil {
		p.cmd.Stdout = p.out
	}
	p.cmd.Stderr = p.out
	p.cmd.WaitDelay = 5 * time.Second
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL} // dies with a crashed test binary
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %v in %s: %v", args, ns.name, err)
	}
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGKILL)
		select {
		case <-p.done:
		case <-time.After(10 * time.Second):
			t.Errorf("%v in %s: not reaped after SIGKILL", args, ns.name)
		}
	})
	return p
}

// wait waits for the program to exit by itself.
func (p *bgProc) wait(t *testing.T, timeout time.Duration) error {
	t.Helper()
	select {
	case <-p.done:
		return p.err
	case <-time.After(timeout):
		t.Fatalf("%v did not finish within %v; output: %s", p.cmd.Args, timeout, p.out.String())
		return nil
	}
}

// ping sends count echo requests from ns to dst and returns the output;
// ok reports ping's exit status 0. No -w: with a deadline ping would keep
// sending until it, which multiplies what a failing ping sends.
func ping(t *testing.T, ns *netns, dst string, count int, extra ...string) (out string, ok bool) {
	t.Helper()
	args := append([]string{"ping", "-n", "-c", strconv.Itoa(count), "-i", "0.2", "-W", "2"}, extra...)
	out, err := ns.run(time.Duration(count+15)*time.Second, append(args, dst)...)
	return out, err == nil
}

// mustPing fails the test unless every echo request is answered.
func mustPing(t *testing.T, from *netns, dst string) {
	t.Helper()
	out, ok := ping(t, from, dst, 3)
	if !ok {
		t.Fatalf("ping %s from %s failed:\n%s", dst, from.name, out)
	}
	t.Logf("ping %s from %s: ok", dst, from.name)
}

// tcpTransfer sends size random bytes from `from` to dst:port in `to` with
// nc and checks that the receiver got exactly them (SHA-256).
func tcpTransfer(t *testing.T, from, to *netns, dst string, port, size int) {
	t.Helper()
	dir := t.TempDir()
	in, out := filepath.Join(dir, "in"), filepath.Join(dir, "out")
	want := writeRandomFile(t, in, size)

	outFile, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer outFile.Close()
	srv := startBG(t, to, nil, outFile, "nc", "-l", "-p", strconv.Itoa(port))
	to.waitListening(t, "t", port)

	inFile, err := os.Open(in)
	if err != nil {
		t.Fatal(err)
	}
	defer inFile.Close()
	start := time.Now()
	cli := startBG(t, from, inFile, nil, "nc", "-N", dst, strconv.Itoa(port))
	if err := cli.wait(t, 60*time.Second); err != nil {
		t.Fatalf("nc sender: %v: %s", err, cli.out.String())
	}
	if err := srv.wait(t, 30*time.Second); err != nil {
		t.Fatalf("nc receiver: %v: %s", err, srv.out.String())
	}
	elapsed := time.Since(start)
	got := fileSHA256(t, out)
	if got != want {
		st, _ := os.Stat(out)
		t.Fatalf("TCP transfer corrupted: sent %d bytes sha256 %s, received %d bytes sha256 %s", size, want, st.Size(), got)
	}
	t.Logf("TCP %s -> %s:%d: %d bytes in %v (%.0f Mbit/s), sha256 equal", from.name, dst, port, size, elapsed.Round(time.Millisecond), float64(size)*8/elapsed.Seconds()/1e6)
}

// udpExchange sends a datagram from a to b and one back on the same flow,
// with nc on both sides.
func udpExchange(t *testing.T, a, b *netns, dstB string, port int) {
	t.Helper()
	srvIn := stdinPipe(t)
	cliIn := stdinPipe(t)
	srv := startBG(t, b, srvIn.r, nil, "nc", "-u", "-l", "-p", strconv.Itoa(port))
	srvIn.r.Close() // the child holds its own copy
	b.waitListening(t, "u", port)
	cli := startBG(t, a, cliIn.r, nil, "nc", "-u", dstB, strconv.Itoa(port))
	cliIn.r.Close()

	ping, pong := "ping-"+randomHex(4), "pong-"+randomHex(4)
	cliIn.writeLine(t, ping)
	srv.out.waitContains(t, 10*time.Second, "datagram at "+b.name, ping)
	// nc -l -u has connected to the sender's address: its stdin goes back.
	srvIn.writeLine(t, pong)
	cli.out.waitContains(t, 10*time.Second, "reply datagram at "+a.name, pong)
	t.Logf("UDP %s <-> %s:%d: datagrams exchanged", a.name, dstB, port)
}

// pipe is an OS pipe whose read end becomes a child's stdin; lines fit in
// the pipe buffer, so writes never block.
type pipe struct{ r, w *os.File }

func stdinPipe(t *testing.T) pipe {
	t.Helper()
	r, w, err := os.Pipe()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close(); w.Close() })
	return pipe{r, w}
}

func (p pipe) writeLine(t *testing.T, s string) {
	t.Helper()
	if _, err := io.WriteString(p.w, s+"\n"); err != nil {
		t.Fatalf("write %q: %v", s, err)
	}
}

// iperf runs a short iperf3 TCP test and logs the throughput; it checks
// only that data flowed (a sanity line, not a benchmark).
func iperf(t *testing.T, client, server *netns, dst string, port int) {
	t.Helper()
	srv := startBG(t, server, nil, nil, "iperf3", "-s", "-1", "-p", strconv.Itoa(port))
	server.waitListening(t, "t", port)
	out, err := client.run(60*time.Second, "iperf3", "-c", dst, "-p", strconv.Itoa(port), "-t", "2", "-J")
	if err != nil {
		t.Fatalf("iperf3 client: %v\n%s", err, out)
	}
	if err := srv.wait(t, 20*time.Second); err != nil {
		t.Errorf("iperf3 server: %v: %s", err, srv.out.String())
	}
	var rep struct {
		End struct {
			SumReceived struct {
				Bytes         float64 `json:"bytes"`
				BitsPerSecond float64 `json:"bits_per_second"`
			} `json:"sum_received"`
		} `json:"end"`
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("iperf3 JSON: %v", err)
	}
	if rep.End.SumReceived.Bytes == 0 {
		t.Fatalf("iperf3 received nothing: %s", out)
	}
	t.Logf("iperf3 %s -> %s: %.0f Mbit/s over 2 s (sanity figure, not a benchmark)", client.name, dst, rep.End.SumReceived.BitsPerSecond/1e6)
}

func writeRandomFile(t *testing.T, path string, size int) string {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sum := sha256.New()
	if _, err := io.CopyN(io.MultiWriter(f, sum), rand.Reader, int64(size)); err != nil {
		t.Fatalf("write %s: %v", path, err)
	}
	return hex.EncodeToString(sum.Sum(nil))
}

func fileSHA256(t *testing.T, path string) string {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sum := sha256.New()
	if _, err := io.Copy(sum, f); err != nil {
		t.Fatalf("read %s: %v", path, err)
	}
	return hex.EncodeToString(sum.Sum(nil))
}
