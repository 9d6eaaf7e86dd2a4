// Command flannelu is a flannel-compatible overlay network daemon: one runs
// on every host, takes a subnet lease in etcd (flanneld's schema) or from
// the Kubernetes API, writes subnet.env for the CNI plugin and carries pod
// traffic between hosts with the backend named in the network config. The
// daemon itself is package daemon; this is its command line and process.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"github.com/flannelu/flannelu/daemon"
	"github.com/flannelu/flannelu/internal/logline"
)

// version is set at build time: -ldflags "-X main.version=..."
var version = "dev"

func main() {
	os.Exit(realMain(os.Args[1:]))
}

// realMain parses the flags, sets the logger up and runs the daemon until
// SIGINT or SIGTERM; it returns the exit status.
func realMain(args []string) int {
	opts, err := daemon.ParseOptions(args, os.LookupEnv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "flannelu:", err)
		return 2
	}
	if opts.Version() {
		// As flanneld prints its version: the version alone, on stderr.
		fmt.Fprintln(os.Stderr, version)
		return 0
	}
	log := newLogger(opts)
	if path := opts.CPUProfile(); path != "" {
		stopProfile, err := startCPUProfile(path)
		if err != nil {
			log.Error("cpu profile", "error", err)
			return 1
		}
		defer stopProfile()
	}
	return runDaemon(opts, log)
}

// newLogger is the process's logger (also slog's default), each line
// bounded in length; it logs the warnings the options carry.
func newLogger(opts *daemon.Options) *slog.Logger {
	log := slog.New(logline.Bound(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: opts.Level()}), logline.DefaultMax))
	slog.SetDefault(log)
	for _, w := range opts.Warnings() {
		log.Warn(w)
	}
	return log
}

// runDaemon runs the daemon until a signal and returns the exit status: a
// signal during start-up is a clean stop, not a failure.
func runDaemon(opts *daemon.Options, log *slog.Logger) int {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.Info("starting flannelu", "version", version)
	var stopped *daemon.StoppedError
	switch err := daemon.Run(ctx, opts, log); {
	case errors.As(err, &stopped):
		log.Info("stopped by signal during start-up", "while", stopped.Stage)
		return 0
	case err != nil:
		log.Error("flannelu stopped", "error", err)
		return 1
	}
	log.Info("exiting cleanly; the subnet lease is kept for the next start")
	return 0
}

func startCPUProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() { pprof.StopCPUProfile(); f.Close() }, nil
}
