// Command flannelu is a flannel-compatible overlay network daemon: one runs
// on every host, takes a subnet lease in etcd (flanneld's schema), writes
// subnet.env for the CNI plugin and carries pod traffic between hosts with
// the backend named in the network config (udp, vxlan or host-gw).
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
	"strings"
	"syscall"

	"github.com/flannelu/flannelu/internal/logline"
)

// version is set at build time: -ldflags "-X main.version=..."
var version = "dev"

func main() {
	os.Exit(realMain(os.Args[1:]))
}

func realMain(args []string) int {
	opts, err := parseOptions(args, lookupEnv, os.Stderr)
	if errors.Is(err, flag.ErrHelp) {
		return 0
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "flannelu:", err)
		return 2
	}
	if opts.version {
		// As flanneld prints its version: the version alone, on stderr.
		fmt.Fprintln(os.Stderr, version)
		return 0
	}
	log := slog.New(logline.Bound(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: opts.level()}), logline.DefaultMax))
	slog.SetDefault(log)
	for _, w := range opts.warnings() {
		log.Warn(w)
	}

	if opts.cpuProfile != "" {
		stopProfile, err := startCPUProfile(opts.cpuProfile)
		if err != nil {
			log.Error("cpu profile", "error", err)
			return 1
		}
		defer stopProfile()
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	log.Info("starting flannelu", "version", version)
	var stopped *stoppedError
	switch err := run(ctx, opts, log); {
	case errors.As(err, &stopped):
		log.Info("stopped by signal during start-up", "while", stopped.stage)
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

func parseLogLevel(s string) (slog.Level, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(strings.ToUpper(s))); err != nil {
		return 0, fmt.Errorf("--log-level %q: must be debug, info, warn or error", s)
	}
	return l, nil
}
