package bench

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"
)

// Names of the benchmarks, in the order Run runs them.
var Names = []string{"endpoint", "memory", "lag", "catchup"}

// Config of a whole run.
type Config struct {
	Quick    bool            // shorter runs (smaller counts) of everything
	Only     map[string]bool // run only these benchmarks (Names); empty: all
	Endpoint EndpointConfig
	Memory   MemoryConfig
	Lag      LagConfig
	Catchup  CatchupConfig
	// BeforeEach, if set, is called before each benchmark (cmd/bench waits
	// there for a quiet machine with --max-load).
	BeforeEach func(ctx context.Context, name string)
}

// QuickDefaults fills what is unset with the --quick sizes.
func (c *Config) QuickDefaults() {
	if c.Endpoint.Requests == 0 {
		c.Endpoint.Requests = 50_000
	}
	if c.Memory.Keys == 0 {
		c.Memory.Keys = 200_000
	}
	if c.Lag.Duration == 0 {
		c.Lag.Duration = 10 * time.Second
	}
	if c.Catchup.Ops == 0 {
		c.Catchup.Ops = 100_000
	}
}

// Report is everything a run measured.
type Report struct {
	Machine  Machine           `json:"machine"`
	Quick    bool              `json:"quick"`
	Seconds  float64           `json:"seconds"`
	Endpoint *EndpointResult   `json:"endpoint,omitempty"`
	Memory   *MemoryResult     `json:"memory,omitempty"`
	Lag      *LagResult        `json:"lag,omitempty"`
	Catchup  *CatchupResult    `json:"catchup,omitempty"`
	Errors   map[string]string `json:"errors,omitempty"`
	// Loads is the load average when each benchmark started and ended.
	Loads map[string][2]string `json:"load_avg_start_end,omitempty"`
}

// Run runs the selected benchmarks one after the other. A benchmark that
// fails is recorded in Report.Errors and the others still run.
func Run(ctx context.Context, env Env, cfg Config) *Report {
	if cfg.Quick {
		cfg.QuickDefaults()
	}
	rep := &Report{Machine: DescribeMachine(), Quick: cfg.Quick}
	start := time.Now()
	fail := func(name string, err error) {
		if rep.Errors == nil {
			rep.Errors = map[string]string{}
		}
		rep.Errors[name] = err.Error()
		env.say("%s failed: %v", name, err)
	}
	want := func(name string) bool {
		ok := (len(cfg.Only) == 0 || cfg.Only[name]) && ctx.Err() == nil
		if ok {
			if cfg.BeforeEach != nil {
				cfg.BeforeEach(ctx, name)
			}
			if rep.Loads == nil {
				rep.Loads = map[string][2]string{}
			}
			rep.Loads[name] = [2]string{LoadAvg()}
		}
		return ok
	}
	ended := func(name string) {
		if l, ok := rep.Loads[name]; ok {
			rep.Loads[name] = [2]string{l[0], LoadAvg()}
		}
	}
	var err error
	if want("endpoint") {
		if rep.Endpoint, err = Endpoint(ctx, env, cfg.Endpoint); err != nil {
			fail("endpoint", err)
		}
		ended("endpoint")
	}
	if want("memory") {
		if rep.Memory, err = Memory(ctx, env, cfg.Memory); err != nil {
			fail("memory", err)
		}
		ended("memory")
	}
	if want("lag") {
		if rep.Lag, err = Lag(ctx, env, cfg.Lag); err != nil {
			fail("lag", err)
		}
		ended("lag")
	}
	if want("catchup") {
		if rep.Catchup, err = Catchup(ctx, env, cfg.Catchup); err != nil {
			fail("catchup", err)
		}
		ended("catchup")
	}
	if ctx.Err() != nil {
		fail("run", ctx.Err())
	}
	rep.Seconds = time.Since(start).Seconds()
	rep.Machine.LoadEnd = LoadAvg()
	return rep
}

func passMiss(ok bool) string {
	if ok {
		return "PASS"
	}
	return "MISS"
}

// WriteText writes the report for people.
func (r *Report) WriteText(w io.Writer) {
	m := r.Machine
	p := func(format string, args ...any) { _, _ = fmt.Fprintf(w, format, args...) }
	p("Global Replica benchmarks")
	if r.Quick {
		p(" (--quick: smaller counts)")
	}
	p("\n\n")
	p("date          %s\n", m.Date)
	p("machine       %d CPUs (nproc), %s, %.1f GiB RAM, Linux %s\n", m.NProc, m.CPUModel, m.MemTotalGiB, m.Kernel)
	p("software      %s, %s\n", m.GoVersion, m.RedisVersion)
	p("load average  %s at start, %s at end (1, 5, 15 min)\n", m.LoadStart, m.LoadEnd)
	for _, n := range Names {
		if l, ok := r.Loads[n]; ok {
			p("              %s when %s started, %s when it ended\n", l[0], n, l[1])
		}
	}
	p("duration      %.0f s\n", r.Seconds)

	if e := r.Endpoint; e != nil {
		c := e.Config
		p("\n1. Endpoint throughput: redis-benchmark -c %d -n %d -r %d -t %s, raw redis-server vs the child (1-region playground)\n\n", c.Clients, c.Requests, c.KeySpace, c.Tests)
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		_, _ = fmt.Fprintln(tw, "command\tpipeline\traw rps\tfloor rps\tfloor/raw\tchild rps\tchild/raw\traw p50 ms\tchild p50 ms\ttarget\tresult\t")
		for _, row := range e.Rows {
			target := "-"
			if row.Target > 0 {
				target = fmt.Sprintf("%.2f×raw %s ≥ %.1f", row.VsTarget, row.Baseline, row.Target)
			}
			res := "-"
			if row.Target > 0 {
				res = passMiss(row.Pass)
			}
			_, _ = fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.0f\t%.2f\t%.0f\t%.2f\t%.3f\t%.3f\t%s\t%s\t\n", row.Command, row.Pipeline, row.Raw.RPS, row.Floor.RPS, row.FloorRatio,
				row.Child.RPS, row.Ratio, row.Raw.P50Ms, row.Child.P50Ms, target, res)
		}
		_ = tw.Flush()
		p("\nfloor: a RESP server built like the child (Go, redcon) that answers with constant replies, stores nothing and\n")
		p("calls nothing; the child does all it does and forwards each command to Redis besides, so floor/raw bounds child/raw.\n")
		p("\nwhere the CPU went (µs of CPU per request, all tests of a run; \"this process\" holds the floor server, the child, its shipper and NATS):\n\n")
		tw = tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		_, _ = fmt.Fprintln(tw, "server\tpipeline\twall s\tredis-server\tthis process\tredis-benchmark\t")
		for _, run := range e.Runs {
			per := func(s float64) float64 { return s * 1e6 / float64(run.Requests) }
			_, _ = fmt.Fprintf(tw, "%s\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t\n", run.Server, run.Pipeline, run.WallSeconds, per(run.RedisCPU), per(run.ChildCPU), per(run.ClientCPU))
		}
		_ = tw.Flush()
	}
	if mr := r.Memory; mr != nil {
		p("\n2. Memory: %d string keys (16-byte names, %d-byte values), raw redis-server vs through the child\n\n", mr.Config.Keys, len(mr.Config.Value))
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
		_, _ = fmt.Fprintln(tw, "\tused_memory delta\tbytes/key\tdb0 keys\tdb0 MEMORY USAGE sum\tdb1 keys\tdb1 MEMORY USAGE sum\tload keys/s\t")
		for _, s := range []struct {
			name string
			v    MemorySide
		}{{"raw", mr.Raw}, {"child", mr.Child}} {
			_, _ = fmt.Fprintf(tw, "%s\t%s\t%.1f\t%d\t%s\t%d\t%s\t%.0f\t\n", s.name, fmtBytes(s.v.Delta), float64(s.v.Delta)/float64(mr.Config.Keys),
				s.v.DB0Keys, fmtBytes(s.v.DB0Bytes), s.v.DB1Keys, fmtBytes(s.v.DB1Bytes), s.v.LoadRate)
		}
		_ = tw.Flush()
		p("\nchild/raw: %.2f× everything (used_memory delta), %.2f× user keyspace (db 0); target ≤ %.1f×: %s\n", mr.Ratio, mr.DB0Ratio, mr.Target, passMiss(mr.Pass))
		p("(child measured after its op log was shipped and trimmed, %.1f s after the load ended)\n", mr.Child.DrainSeconds)
	}
	if l := r.Lag; l != nil {
		c := l.Config
		p("\n3. Replication lag, sgp → fra (2-region playground): SET to sgp at %.0f writes/s for %s, every %d-th write timed until fra's endpoint returns it\n\n", c.Rate, c.Duration, c.SampleEvery)
		p("writes acknowledged  %d (%d errors) in %.1f s = %.0f writes/s\n", l.Writes, l.WriteErrors, l.Seconds, l.AchievedRate)
		p("samples              %d seen, %d lost (not seen within %s)\n", l.Samples, l.Lost, c.Timeout)
		p("lag ms               min %.2f  p50 %.2f  p90 %.2f  p99 %.2f  max %.2f\n", l.MinMs, l.P50Ms, l.P90Ms, l.P99Ms, l.MaxMs)
		p("target               p99 ≤ %.0f ms: %s\n", l.TargetP99Ms, passMiss(l.Pass))
	}
	if cu := r.Catchup; cu != nil {
		p("\n4. Catch-up, sgp → fra (2-region playground): channel paused, backlog written to sgp and shipped, channel resumed\n\n")
		p("backlog          %d ops (%s on %d keys)\n", cu.Backlog, strings.ToUpper(cu.Config.Kind), cu.Config.KeySpace)
		p("written to sgp   %.1f s (%.0f ops/s through the child, pipelined); op log shipped after %.1f s\n", cu.WriteSeconds, cu.WriteRate, cu.ShipSeconds)
		p("applied in fra   %.2f s = %.0f ops/s\n", cu.ApplySeconds, cu.ApplyRate)
		if cu.ApplyCalls > 0 {
			p("  inside fra's Redis: %d FCALLs (%.0f ops each), %.1f µs per op in FCALL = %.0f%% of the wall time\n",
				cu.ApplyCalls, float64(cu.Backlog)/float64(cu.ApplyCalls), cu.RedisUsecPerOp, 100*cu.RedisUsecPerOp*float64(cu.Backlog)/1e6/cu.ApplySeconds)
			p("  fast path (merged in the child, compare-and-set in Redis): %d ops = %.0f%%\n", cu.FastOps, 100*float64(cu.FastOps)/float64(cu.Backlog))
			p("  CPU during the catch-up: fra's redis-server %.1f s, this process (children, NATS) %.1f s; fra's Redis forked %d times (AOF rewrite)\n", cu.RedisCPU, cu.ProcessCPU, cu.RedisForks)
		}
		p("target           ≥ %.0f ops/s per channel: %s\n", cu.Target, passMiss(cu.Pass))
	}
	if len(r.Errors) > 0 {
		p("\nErrors:\n")
		for _, n := range append(append([]string{}, Names...), "run") {
			if e, ok := r.Errors[n]; ok {
				p("  %s: %s\n", n, strings.TrimSpace(e))
			}
		}
	}
}
