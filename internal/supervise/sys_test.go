package supervise

import "golang.org/x/sys/unix"

func syscallMkfifo(path string) error { return unix.Mkfifo(path, 0o600) }
func syscallKill(pid int) error       { return unix.Kill(pid, unix.SIGKILL) }
func syscallSignal0(pid int) error    { return unix.Kill(pid, 0) }

func syscallDup(fd int) (int, error) { return unix.Dup(fd) }
