package harness

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// proc is a background program (a server, a daemon, a baseline's
// forwarder). Its scope stops it by PID: SIGTERM, then SIGKILL, and reaps
// it.
type proc struct {
	name string
	cmd  *exec.Cmd
	out  *capBuffer // stdout and stderr
	done chan struct{}
	err  error // set before done is closed
	// grace is how long the scope's stop waits after SIGTERM before
	// SIGKILL.
	grace time.Duration
}

// startProc starts args as a background process owned by sc. It dies with
// the driver even if the driver is killed (Pdeathsig).
func (s *Suite) startProc(sc *scope, name string, args []string, setup func(*exec.Cmd)) (*proc, error) {
	p := &proc{name: name, out: &capBuffer{max: 1 << 20}, done: make(chan struct{}), grace: 10 * time.Second}
	p.cmd = exec.Command(args[0], args[1:]...)
	p.cmd.Stdout, p.cmd.Stderr = p.out, p.out
	p.cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	p.cmd.WaitDelay = 5 * time.Second
	if setup != nil {
		setup(p.cmd)
	}
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	s.log.Debug("started", "proc", name, "pid", p.cmd.Process.Pid, "args", strings.Join(args, " "))
	go func() {
		p.err = p.cmd.Wait()
		close(p.done)
	}()
	sc.add("stop "+name, func() error { return p.stop(p.grace) })
	return p, nil
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// wait waits up to timeout for the process to end by itself.
func (p *proc) wait(timeout time.Duration) error {
	t := time.NewTimer(timeout)
	defer t.Stop()
	select {
	case <-p.done:
		return p.err
	case <-t.C:
		return fmt.Errorf("%s still running after %v", p.name, timeout)
	}
}

// stop ends the process: SIGTERM, grace, SIGKILL. Stopping an exited
// process is a no-op.
func (p *proc) stop(grace time.Duration) error {
	if p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	if p.wait(grace) == nil || p.exited() {
		return nil
	}
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	if err := p.wait(10 * time.Second); err != nil && !p.exited() {
		return fmt.Errorf("%s (pid %d) not reaped after SIGKILL", p.name, p.pid())
	}
	return fmt.Errorf("%s (pid %d) ignored SIGTERM for %v and was killed", p.name, p.pid(), grace)
}

// run runs args to completion within timeout (and ctx) and returns its
// stdout; a failure's error carries stderr.
func (s *Suite) run(ctx context.Context, timeout time.Duration, args []string, setup func(*exec.Cmd)) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	var stdout, stderr capBuffer
	stdout.max, stderr.max = 16<<20, 1<<20
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	cmd.WaitDelay = 5 * time.Second
	if setup != nil {
		setup(cmd)
	}
	err := cmd.Run()
	if err != nil {
		msg := strings.TrimSpace(stderr.String())
		if msg == "" {
			msg = lastLines(stdout.String(), 3)
		}
		if ctx.Err() != nil && !errors.Is(err, context.Canceled) {
			err = fmt.Errorf("%w (%v)", err, ctx.Err())
		}
		return stdout.Bytes(), fmt.Errorf("%s: %w: %s", strings.Join(shortArgs(args), " "), err, lastLines(msg, 3))
	}
	return stdout.Bytes(), nil
}

// shortArgs drops the `ip netns exec NAME` prefix from error messages.
func shortArgs(args []string) []string {
	if len(args) > 3 && args[0] == "ip" && args[1] == "netns" && args[2] == "exec" {
		return append([]string{"[" + args[3] + "]"}, args[4:]...)
	}
	return args
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, " | ")
}

// capBuffer is a goroutine-safe buffer that keeps at most max bytes (the
// first ones), so a chatty process cannot fill the driver's memory.
type capBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
	max int
}

func (b *capBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if room := b.max - b.buf.Len(); room > 0 {
		b.buf.Write(p[:min(len(p), room)])
	}
	return len(p), nil
}

func (b *capBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

func (b *capBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// clockTicks is USER_HZ, the unit of /proc/PID/stat times: 100 on every
// Linux architecture Go supports.
const clockTicks = 100

// cpuTicks returns the user+system CPU time of pid (all its threads) in
// clock ticks.
func cpuTicks(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	return parseStatTicks(b)
}

// parseStatTicks reads utime+stime from a /proc/PID/stat line. The command
// name (field 2) may hold spaces and parentheses, so fields are counted
// from the last ')'.
func parseStatTicks(b []byte) (uint64, error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, errors.New("stat: no command name")
	}
	f := strings.Fields(string(b[i+1:]))
	// After the name: state(3) … utime(14) stime(15), i.e. f[11], f[12].
	if len(f) < 13 {
		return 0, errors.New("stat: too few fields")
	}
	u, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, fmt.Errorf("stat: %w", err)
	}
	return u + st, nil
}

// cpuMeter measures the CPU the given processes use over an interval, in
// cores (1.0 = one core busy all the time).
type cpuMeter struct {
	pids  []int
	start time.Time
	ticks []uint64
}

func startCPU(pids []int) *cpuMeter {
	m := &cpuMeter{pids: pids, start: time.Now(), ticks: make([]uint64, len(pids))}
	for i, pid := range pids {
		m.ticks[i], _ = cpuTicks(pid)
	}
	return m
}

// cores returns the CPU used since startCPU, or ok false when there are no
// processes to measure (a kernel path) or one vanished.
func (m *cpuMeter) cores() (float64, bool) {
	if len(m.pids) == 0 {
		return 0, false
	}
	el := time.Since(m.start).Seconds()
	var sum uint64
	for i, pid := range m.pids {
		t, err := cpuTicks(pid)
		if err != nil || t < m.ticks[i] {
			return 0, false
		}
		sum += t - m.ticks[i]
	}
	if el <= 0 {
		return 0, false
	}
	return float64(sum) / clockTicks / el, true
}

// rssKiB reads VmRSS of pid from /proc/PID/status.
func rssKiB(pid int) (int64, error) { return statusField(pid, "VmRSS") }

// statusField reads the first number of a /proc/PID/status line ("VmRSS",
// "Threads", …).
func statusField(pid int, key string) (int64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, key+":"); ok {
			f := strings.Fields(v)
			if len(f) >= 1 {
				return strconv.ParseInt(f[0], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no %s in /proc/%d/status", key, pid)
}

// cmdTimeout bounds the suite's short set-up commands.
const cmdTimeout = 30 * time.Second

// stdinString feeds s to a command's standard input.
func stdinString(s string) func(*exec.Cmd) {
	return func(c *exec.Cmd) { c.Stdin = strings.NewReader(s) }
}
