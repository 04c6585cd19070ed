package main

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"github.com/vrouter/vrouter/internal/daemon"
	"github.com/vrouter/vrouter/internal/tunnel"
	"github.com/vrouter/vrouter/router"
)

func cmdRun(args []string, stdout io.Writer) error {
	fs := newFlags("run", "run [flags]", stdout)
	host, _ := os.Hostname()
	name := fs.String("name", host, "node name (unique in the cluster)")
	stateDir := fs.String("state-dir", ".vrouter", "directory for the daemon's state")
	controlPath := fs.String("control", "", "control socket path (default STATE-DIR/control.sock)")
	mtu := fs.Int("mtu", daemon.DefaultMTU, "MTU of container ports")
	logLevel := fs.String("log-level", "info", "log level: debug, info, warn or error")
	if err := parse(fs, args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("run takes no arguments, got %q", fs.Args())
	}
	var level slog.Level
	if err := level.UnmarshalText([]byte(*logLevel)); err != nil {
		return usagef("--log-level %q: want debug, info, warn or error", *logLevel)
	}
	if *mtu < 576 || *mtu > 65535 {
		return usagef("--mtu %d: want 576-65535", *mtu)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))
	d, err := daemon.New(daemon.Config{
		Name:     *name,
		StateDir: *stateDir,
		Control:  *controlPath,
		MTU:      *mtu,
		Logger:   log,
		OpenPort: func(f *os.File, mtu int) (router.Port, string, error) {
			p, info, err := tunnel.OpenPort(f, mtu)
			return p, info.Name, err
		},
	})
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	served := make(chan error, 1)
	go func() { served <- d.Serve() }()
	select {
	case <-ctx.Done():
		log.Info("shutting down", "signal", context.Cause(ctx))
	case err := <-served:
		d.Close()
		return fmt.Errorf("control socket: %w", err)
	}
	if err := d.Close(); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	<-served
	log.Info("stopped")
	return nil
}
