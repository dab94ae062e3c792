package bench

import (
	"bytes"
	"context"
	"encoding/csv"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// EndpointConfig sets the redis-benchmark runs of the endpoint benchmark.
// Raw Redis and the child get identical settings.
type EndpointConfig struct {
	Clients   int    // -c, default 50
	Requests  int    // -n per test, default 200000
	KeySpace  int    // -r, default 100000
	Tests     string // -t, default "set,get,incr"
	Pipelines []int  // -P values, default 1 and 16 (1: no pipelining)
}

func (c *EndpointConfig) defaults() {
	if c.Clients == 0 {
		c.Clients = 50
	}
	if c.Requests == 0 {
		c.Requests = 200000
	}
	if c.KeySpace == 0 {
		c.KeySpace = 100000
	}
	if c.Tests == "" {
		c.Tests = "set,get,incr"
	}
	if len(c.Pipelines) == 0 {
		c.Pipelines = []int{1, 16}
	}
}

// BenchRow is one line of redis-benchmark --csv output.
type BenchRow struct {
	Test  string  `json:"test"`
	RPS   float64 `json:"rps"`
	AvgMs float64 `json:"avg_ms"`
	P50Ms float64 `json:"p50_ms"`
	P99Ms float64 `json:"p99_ms"`
}

// EndpointRow compares one command at one pipeline depth.
type EndpointRow struct {
	Command  string   `json:"command"`
	Pipeline int      `json:"pipeline"`
	Raw      BenchRow `json:"raw"`
	Child    BenchRow `json:"child"`
	Ratio    float64  `json:"ratio"` // child rps / raw rps of the same command
	// The floor server (see floorServer): what an endpoint doing nothing
	// but the RESP exchange reaches, and its ratio to raw Redis, the
	// ceiling of the child's.
	Floor      BenchRow `json:"floor"`
	FloorRatio float64  `json:"floor_ratio"`
	// The target: child rps / raw rps of Baseline >= Target.
	Baseline string  `json:"target_baseline,omitempty"`
	Target   float64 `json:"target,omitempty"`
	VsTarget float64 `json:"vs_baseline,omitempty"`
	Pass     bool    `json:"pass"`
}

// EndpointRun is where the CPU went during one redis-benchmark run (all
// its tests), in CPU seconds: the redis-server under test, this process
// (for the child: the child, its shipper and the embedded NATS server) and
// redis-benchmark itself.
type EndpointRun struct {
	Server      string  `json:"server"` // raw, floor or child
	Pipeline    int     `json:"pipeline"`
	Requests    int     `json:"requests"`
	WallSeconds float64 `json:"wall_seconds"`
	RedisCPU    float64 `json:"redis_cpu_seconds"`
	ChildCPU    float64 `json:"child_cpu_seconds"`
	ClientCPU   float64 `json:"redis_benchmark_cpu_seconds"`
}

// EndpointResult is the endpoint benchmark's outcome.
type EndpointResult struct {
	Config EndpointConfig `json:"config"`
	Rows   []EndpointRow  `json:"rows"`
	Runs   []EndpointRun  `json:"runs"`
}

// endpointTargets are issue 3's targets: command -> (raw baseline, ratio).
var endpointTargets = map[string]struct {
	base  string
	ratio float64
}{
	"GET":  {"GET", 0.8},
	"SET":  {"SET", 0.5},
	"INCR": {"SET", 0.5},
}

// Endpoint runs redis-benchmark against a raw redis-server, the floor
// server and the child of a one-region playground, in turn at each
// pipeline depth, with identical settings.
func Endpoint(ctx context.Context, env Env, cfg EndpointConfig) (*EndpointResult, error) {
	cfg.defaults()
	if _, err := exec.LookPath("redis-benchmark"); err != nil {
		return nil, fmt.Errorf("bench: redis-benchmark not on PATH (Debian: apt-get install redis-tools): %w", err)
	}
	raw, err := startRaw(ctx)
	if err != nil {
		return nil, err
	}
	defer raw.Stop()
	pl, err := env.startPlay(ctx, 1)
	if err != nil {
		return nil, err
	}
	defer pl.Close()
	floor, err := startFloor()
	if err != nil {
		return nil, err
	}
	defer func() { _ = floor.Close() }()
	child := pl.Regions[0].Addr
	rc := raw.Client()
	defer func() { _ = rc.Close() }()
	rawPID := redisPID(ctx, rc)
	childPID := redisPID(ctx, pl.Regions[0].Daemon.Engine.Redis())
	tests := len(strings.Split(cfg.Tests, ","))
	res := &EndpointResult{Config: cfg}
	run := func(server, addr string, redisPID, p int) ([]BenchRow, error) {
		m := newCPUMeter(redisPID, os.Getpid())
		start := time.Now()
		rows, clientCPU, err := redisBenchmark(ctx, addr, cfg, p)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", server, err)
		}
		used := m.used()
		res.Runs = append(res.Runs, EndpointRun{
			Server: server, Pipeline: p, Requests: cfg.Requests * tests, WallSeconds: time.Since(start).Seconds(),
			RedisCPU: used[0], ChildCPU: used[1], ClientCPU: clientCPU,
		})
		return rows, nil
	}
	for _, p := range cfg.Pipelines {
		env.say("endpoint: redis-benchmark -c %d -n %d -r %d -t %s -P %d against raw Redis %s", cfg.Clients, cfg.Requests, cfg.KeySpace, cfg.Tests, p, raw.Addr())
		rawRows, err := run("raw", raw.Addr(), rawPID, p)
		if err != nil {
			return nil, err
		}
		env.say("endpoint: the same against the floor server %s", floor.Addr())
		floorRows, err := run("floor", floor.Addr(), 0, p)
		if err != nil {
			return nil, err
		}
		env.say("endpoint: the same against the child %s", child)
		childRows, err := run("child", child, childPID, p)
		if err != nil {
			return nil, err
		}
		res.Rows = append(res.Rows, compareRows(rawRows, floorRows, childRows, p)...)
	}
	return res, nil
}

// compareRows pairs raw, floor and child rows by test and checks the
// targets.
func compareRows(raw, floor, child []BenchRow, pipeline int) []EndpointRow {
	byTest, floorByTest := rowsByTest(raw), rowsByTest(floor)
	var out []EndpointRow
	for _, c := range child {
		r, ok := byTest[c.Test]
		if !ok {
			continue
		}
		row := EndpointRow{Command: c.Test, Pipeline: pipeline, Raw: r, Child: c, Ratio: ratio(c.RPS, r.RPS)}
		if f, ok := floorByTest[c.Test]; ok {
			row.Floor, row.FloorRatio = f, ratio(f.RPS, r.RPS)
		}
		if t, ok := endpointTargets[c.Test]; ok {
			row.Baseline, row.Target = t.base, t.ratio
			row.VsTarget = ratio(c.RPS, byTest[t.base].RPS)
			row.Pass = row.VsTarget >= t.ratio
		}
		out = append(out, row)
	}
	return out
}

// rowsByTest indexes redis-benchmark rows by their test.
func rowsByTest(rows []BenchRow) map[string]BenchRow {
	m := make(map[string]BenchRow, len(rows))
	for _, r := range rows {
		m[r.Test] = r
	}
	return m
}

func ratio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// redisBenchmark runs redis-benchmark --csv against addr and parses its
// rows; it also returns the CPU seconds redis-benchmark used.
func redisBenchmark(ctx context.Context, addr string, cfg EndpointConfig, pipeline int) ([]BenchRow, float64, error) {
	host, port, _ := strings.Cut(addr, ":")
	args := []string{"-h", host, "-p", port, "-c", strconv.Itoa(cfg.Clients), "-n", strconv.Itoa(cfg.Requests),
		"-r", strconv.Itoa(cfg.KeySpace), "-t", cfg.Tests, "--csv"}
	if pipeline > 1 {
		args = append(args, "-P", strconv.Itoa(pipeline))
	}
	// Bound the run: even at 1,000 requests/s per test it ends in time.
	tests := len(strings.Split(cfg.Tests, ","))
	timeout := time.Duration(cfg.Requests*tests/1000+60) * time.Second
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(cctx, "redis-benchmark", args...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, 0, fmt.Errorf("redis-benchmark %s: %w: %s", strings.Join(args, " "), err, strings.TrimSpace(stderr.String()))
	}
	cpu := (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
	rows, err := ParseBenchmarkCSV(stdout.Bytes())
	if err != nil {
		return nil, 0, err
	}
	if len(rows) == 0 {
		return nil, 0, fmt.Errorf("redis-benchmark printed no results: %s %s", stdout.String(), stderr.String())
	}
	return rows, cpu, nil
}

// ParseBenchmarkCSV parses redis-benchmark --csv output: a header line
// ("test","rps","avg_latency_ms",...,"p50_latency_ms",...) and one line per
// test. Older versions print no header and only test and rps; the latency
// columns then stay 0.
func ParseBenchmarkCSV(out []byte) ([]BenchRow, error) {
	rd := csv.NewReader(bytes.NewReader(out))
	rd.FieldsPerRecord = -1
	recs, err := rd.ReadAll()
	if err != nil {
		return nil, fmt.Errorf("redis-benchmark csv: %w", err)
	}
	col := map[string]int{"test": 0, "rps": 1}
	var rows []BenchRow
	for _, rec := range recs {
		if len(rec) >= 2 && rec[0] == "test" {
			col = map[string]int{}
			for i, h := range rec {
				col[h] = i
			}
			continue
		}
		get := func(name string) float64 {
			i, ok := col[name]
			if !ok || i >= len(rec) {
				return 0
			}
			v, _ := strconv.ParseFloat(rec[i], 64)
			return v
		}
		ti, ok := col["test"]
		if !ok || ti >= len(rec) || rec[ti] == "" {
			continue
		}
		// redis-benchmark names INCR "INCR", SET "SET", GET "GET"; some
		// tests carry a suffix ("LPUSH (needed to benchmark LRANGE)").
		name, _, _ := strings.Cut(rec[ti], " ")
		rows = append(rows, BenchRow{Test: name, RPS: get("rps"), AvgMs: get("avg_latency_ms"), P50Ms: get("p50_latency_ms"), P99Ms: get("p99_latency_ms")})
	}
	return rows, nil
}
