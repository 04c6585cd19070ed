//go:build e2e

package e2e

import (
	"encoding/json"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// networkSize is the number of container addresses in 10.240.0.0/22.
const networkSize = 1022

// TestNetworkFull fills one PN with 1022 containers and checks that the
// 1023rd attach fails with "full" and leaves nothing behind. The containers
// are TUNs the test opens itself, each in an unnamed namespace, and hands
// over with `attach --fd` (as a container engine would). One namespace for
// all of them would not do: the daemon refuses a second TUN from a
// namespace it already serves.
func TestNetworkFull(t *testing.T) {
	need(t)
	d := startDaemon(t)
	// The daemon closes its ports one after the other on SIGTERM and the
	// kernel takes ~20 ms to unregister each TUN.
	d.stopWait = 90 * time.Second
	t0 := time.Now()
	tuns := openIsolatedTUNs(t, "vr0", networkSize+1)
	t.Logf("opened %d TUNs in %v", len(tuns), time.Since(t0).Round(time.Millisecond))
	pn, app := newID("pn"), newID("ap")

	// Two clients at a time: the machine has two cores and the daemon
	// serialises allocation anyway.
	const workers = 2
	start := time.Now()
	var (
		mu    sync.Mutex
		ips   = map[string]int{}
		fails []result
		wg    sync.WaitGroup
		next  = make(chan int)
	)
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				r, err := d.attachFD(tuns[i], pn, app, "worker")
				mu.Lock()
				if err != nil {
					r.stderr += " (" + err.Error() + ")"
					fails = append(fails, r)
				} else if r.code != 0 {
					fails = append(fails, r)
				} else {
					var c container
					if err := json.Unmarshal([]byte(r.stdout), &c); err != nil {
						r.stderr += " (undecodable JSON: " + err.Error() + ")"
						fails = append(fails, r)
					} else {
						ips[c.IP]++
					}
				}
				mu.Unlock()
			}
		}()
	}
	deadline := time.Now().Add(3 * time.Minute)
	for i := range networkSize {
		if time.Now().After(deadline) {
			break
		}
		mu.Lock()
		stop := len(fails) > 0
		mu.Unlock()
		if stop {
			break
		}
		next <- i
	}
	close(next)
	wg.Wait()
	elapsed := time.Since(start)
	if len(fails) > 0 {
		t.Fatalf("attach %d of %d failed: %v", len(ips)+1, networkSize, fails[0])
	}
	if len(ips) != networkSize {
		t.Fatalf("only %d attaches in %v (deadline)", len(ips), elapsed)
	}
	t.Logf("%d attaches by --fd in %v (%v each)", networkSize, elapsed.Round(time.Millisecond), (elapsed / networkSize).Round(time.Microsecond))
	for ip, n := range ips {
		a, err := netip.ParseAddr(ip)
		if err != nil || !inPrivateRange(a) || n != 1 {
			t.Errorf("address %q handed out %d times (or outside the range)", ip, n)
		}
	}

	r, err := d.attachFD(tuns[networkSize], pn, app, "worker")
	if err != nil {
		t.Fatal(err)
	}
	expectError(t, r, 1, "full")
	if s := d.status(t); s.Containers != networkSize {
		t.Errorf("status containers = %d after the refused attach, want %d", s.Containers, networkSize)
	}

	// Another PN is not affected by the first being full.
	other := newNetns(t)
	c := d.attach(t, other, newID("pn"), app, "web")
	if c.IP != "10.240.0.1" {
		t.Errorf("first container of a new PN got %s, want 10.240.0.1 (lowest free)", c.IP)
	}

	// SIGTERM closes 1023 ports; the kernel unregisters each TUN whose
	// last fd goes, so the test's own copies go first.
	closeAll(tuns)
	t0 = time.Now()
	if code := d.terminate(t); code != 0 {
		t.Errorf("daemon exit %d after SIGTERM with %d ports", code, networkSize+1)
	}
	t.Logf("daemon with %d ports stopped in %v", networkSize+1, time.Since(t0).Round(time.Millisecond))
}
