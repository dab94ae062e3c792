// Command bench is Global Replica's benchmark driver: the child's endpoint
// against raw Redis (redis-benchmark), memory of 1M small strings,
// replication lag at a sustained write rate and catch-up after a backlog,
// all on this machine. `go tool task bench` runs it after the Go
// micro-benchmarks; docs/benchmarks.md explains the measurements.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/internal/bench"
	"github.com/globalreplica/globalreplica/internal/daemon"
)

func main() {
	daemon.TuneGC()
	os.Exit(run())
}

func run() int {
	var (
		cfg      bench.Config
		asJSON   bool
		only     string
		verbose  bool
		timeout  time.Duration
		maxLoad  float64
		loadWait time.Duration
		cpuProf  string
		cuProf   string
	)
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	fs.Usage = func() {
		_, _ = fmt.Fprintf(fs.Output(), `Usage: go run ./cmd/bench [flags]

Runs Global Replica's benchmarks on this machine (loopback only) and prints
a report: endpoint throughput of the child against raw Redis
(redis-benchmark), memory of small strings, replication lag between two
regions at a sustained write rate, and catch-up after a backlog. Needs
redis-server and redis-benchmark on PATH. Progress goes to stderr.

Flags:
`)
		fs.PrintDefaults()
	}
	fs.BoolVar(&cfg.Quick, "quick", false, "smaller counts: 50k requests per redis-benchmark test, 200k keys, 10 s of lag, 100k ops of catch-up")
	fs.BoolVar(&asJSON, "json", false, "print the report as JSON instead of text")
	fs.StringVar(&only, "only", "", "comma-separated benchmarks to run: "+strings.Join(bench.Names, ","))
	fs.BoolVar(&verbose, "v", false, "show the playground's log (warnings and errors)")
	fs.DurationVar(&timeout, "timeout", 20*time.Minute, "stop the whole run after this long")
	fs.Float64Var(&maxLoad, "max-load", 0, "before each benchmark, wait (up to -load-wait) until the 1-minute load average is below this; 0: do not wait")
	fs.DurationVar(&loadWait, "load-wait", 5*time.Minute, "how long -max-load waits at most, per benchmark")
	fs.IntVar(&cfg.Endpoint.Clients, "clients", 0, "redis-benchmark -c (default 50)")
	fs.IntVar(&cfg.Endpoint.Requests, "requests", 0, "redis-benchmark -n per test (default 200000; --quick 50000)")
	fs.StringVar(&cfg.Endpoint.Tests, "tests", "", "redis-benchmark -t of the endpoint benchmark (default set,get,incr)")
	fs.Func("pipelines", "comma-separated redis-benchmark -P depths of the endpoint benchmark (default 1,16)", func(v string) error {
		for _, f := range strings.Split(v, ",") {
			p, err := strconv.Atoi(strings.TrimSpace(f))
			if err != nil || p < 1 {
				return fmt.Errorf("pipeline depth %q: want a positive integer", f)
			}
			cfg.Endpoint.Pipelines = append(cfg.Endpoint.Pipelines, p)
		}
		return nil
	})
	fs.IntVar(&cfg.Memory.Keys, "keys", 0, "keys of the memory benchmark (default 1000000; --quick 200000)")
	fs.Float64Var(&cfg.Lag.Rate, "lag-rate", 0, "writes/s of the lag benchmark (default 5000)")
	fs.DurationVar(&cfg.Lag.Duration, "lag-duration", 0, "how long the lag benchmark writes (default 30s; --quick 10s)")
	fs.StringVar(&cpuProf, "cpuprofile", "", "write a Go CPU profile of this process (children, shippers, receivers, embedded NATS) for the whole run to this file")
	fs.StringVar(&cuProf, "catchup-cpuprofile", "", "write a Go CPU profile of this process during the catch-up's apply phase alone to this file")
	fs.IntVar(&cfg.Catchup.Ops, "catchup-ops", 0, "backlog of the catch-up benchmark (default 1000000; --quick 100000)")
	fs.StringVar(&cfg.Catchup.Kind, "catchup-kind", "", "the catch-up backlog's writes, one of "+strings.Join(bench.CatchupKinds(), ", ")+" (default set)")
	if err := fs.Parse(os.Args[1:]); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if only != "" {
		cfg.Only = map[string]bool{}
		for _, n := range strings.Split(only, ",") {
			n = strings.TrimSpace(n)
			known := false
			for _, k := range bench.Names {
				known = known || k == n
			}
			if !known {
				_, _ = fmt.Fprintf(os.Stderr, "bench: unknown benchmark %q (have %s)\n", n, strings.Join(bench.Names, ", "))
				return 2
			}
			cfg.Only[n] = true
		}
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	level := zerolog.Disabled
	if verbose {
		level = zerolog.WarnLevel
	}
	env := bench.Env{Progress: os.Stderr, Log: zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr}).Level(level).With().Timestamp().Logger()}
	if maxLoad > 0 {
		cfg.BeforeEach = func(ctx context.Context, name string) {
			waitLoad(ctx, name, maxLoad, loadWait)
		}
	}
	if cpuProf != "" && cuProf != "" {
		_, _ = fmt.Fprintln(os.Stderr, "bench: -cpuprofile and -catchup-cpuprofile exclude each other (one CPU profile at a time)")
		return 2
	}
	if cuProf != "" {
		f, err := os.Create(cuProf)
		if err != nil {
			_, _ = fmt.Fprintln(os.Stderr, "bench: catch-up cpu profile:", err)
			return 1
		}
		defer func() { _ = f.Close() }()
		cfg.Catchup.Profile = f
	}
	if cpuProf != "" {
		f, err := os.Create(cpuProf)
		if err == nil {
			err = pprof.StartCPUProfile(f)
		}
		if err != nil {
			_, _ = fmt.Fprintln(os.Stderr, "bench: cpu profile:", err)
			return 1
		}
		defer func() {
			pprof.StopCPUProfile()
			_ = f.Close()
		}()
	}
	rep := bench.Run(ctx, env, cfg)
	if asJSON {
		enc := json.NewEncoder(os.Stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			_, _ = fmt.Fprintln(os.Stderr, "bench:", err)
			return 1
		}
	} else {
		rep.WriteText(os.Stdout)
	}
	if len(rep.Errors) > 0 {
		return 1
	}
	return 0
}

// waitLoad waits, bounded by maxWait, until the 1-minute load average drops
// below limit, so that the benchmark name competes less with other work.
func waitLoad(ctx context.Context, name string, limit float64, maxWait time.Duration) {
	deadline := time.Now().Add(maxWait)
	for {
		l := bench.Load1()
		if l < 0 || l < limit {
			return
		}
		if time.Now().After(deadline) {
			_, _ = fmt.Fprintf(os.Stderr, "bench: load average %.2f still ≥ %.2f after %s; running %s anyway\n", l, limit, maxWait, name)
			return
		}
		_, _ = fmt.Fprintf(os.Stderr, "bench: load average %.2f ≥ %.2f, waiting before %s\n", l, limit, name)
		select {
		case <-ctx.Done():
			return
		case <-time.After(15 * time.Second):
		}
	}
}
