package stack

import (
	"encoding/binary"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// readRaw waits until the host socket is readable and reads once into a
// buffer from pool, which it takes only when there is something to read:
// a flow waiting for data holds no buffer. The caller returns the buffer
// to pool. For a stream socket n == 0 with a nil error is EOF.
func readRaw(rc syscall.RawConn, pool *sync.Pool) (bp *[]byte, n int, err error) {
	var rerr error
	err = rc.Read(func(fd uintptr) bool {
		if bp == nil {
			bp = pool.Get().(*[]byte)
		}
		for {
			n, rerr = unix.Read(int(fd), *bp)
			if rerr != unix.EINTR {
				break
			}
		}
		if rerr == unix.EAGAIN {
			pool.Put(bp)
			bp = nil
			return false // wait for readability
		}
		return true
	})
	if err == nil {
		err = rerr
	}
	if err != nil {
		if bp != nil {
			pool.Put(bp)
		}
		return nil, 0, err
	}
	return bp, n, nil
}

func putUint16(b []byte, v uint16) { binary.BigEndian.PutUint16(b, v) }
func putUint32(b []byte, v uint32) { binary.BigEndian.PutUint32(b, v) }
