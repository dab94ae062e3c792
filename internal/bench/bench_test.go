package bench

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/rs/zerolog"
)

func TestParseBenchmarkCSV(t *testing.T) {
	out := `"test","rps","avg_latency_ms","min_latency_ms","p50_latency_ms","p95_latency_ms","p99_latency_ms","max_latency_ms"
"SET","31055.90","1.067","0.104","0.975","1.919","3.319","5.167"
"GET","24213.08","1.368","0.216","0.999","3.799","6.263","13.359"
"LPUSH (needed to benchmark LRANGE)","1000.00","1","1","1","1","1","1"
`
	rows, err := ParseBenchmarkCSV([]byte(out))
	if err != nil {
		t.Fatal(err)
	}
	if len(rows) != 3 {
		t.Fatalf("got %d rows: %+v", len(rows), rows)
	}
	want := BenchRow{Test: "SET", RPS: 31055.90, AvgMs: 1.067, P50Ms: 0.975, P99Ms: 3.319}
	if rows[0] != want {
		t.Errorf("row 0 = %+v, want %+v", rows[0], want)
	}
	if rows[2].Test != "LPUSH" {
		t.Errorf("row 2 test = %q", rows[2].Test)
	}
	// Without a header (old redis-benchmark): test and rps only.
	rows, err = ParseBenchmarkCSV([]byte(`"SET","100.5"` + "\n"))
	if err != nil || len(rows) != 1 || rows[0].RPS != 100.5 || rows[0].P50Ms != 0 {
		t.Errorf("headerless: %+v %v", rows, err)
	}
}

func TestCompareRowsTargets(t *testing.T) {
	raw := []BenchRow{{Test: "SET", RPS: 100}, {Test: "GET", RPS: 200}, {Test: "INCR", RPS: 300}}
	floor := []BenchRow{{Test: "SET", RPS: 90}, {Test: "GET", RPS: 160}}
	child := []BenchRow{{Test: "SET", RPS: 50}, {Test: "GET", RPS: 150}, {Test: "INCR", RPS: 49}}
	rows := compareRows(raw, floor, child, 16)
	got := map[string]EndpointRow{}
	for _, r := range rows {
		got[r.Command] = r
	}
	if r := got["SET"]; !r.Pass || r.VsTarget != 0.5 || r.Baseline != "SET" {
		t.Errorf("SET: %+v", r)
	}
	if r := got["SET"]; r.Floor.RPS != 90 || r.FloorRatio != 0.9 {
		t.Errorf("SET floor: %+v", r)
	}
	if r := got["GET"]; r.Pass || r.VsTarget != 0.75 || r.Target != 0.8 || r.FloorRatio != 0.8 {
		t.Errorf("GET: %+v", r)
	}
	// INCR is held to raw SET, not raw INCR.
	if r := got["INCR"]; r.Pass || r.VsTarget != 0.49 || r.Baseline != "SET" || r.Ratio != 49.0/300 {
		t.Errorf("INCR: %+v", r)
	}
}

func TestPercentile(t *testing.T) {
	var d []time.Duration
	for i := 1; i <= 100; i++ {
		d = append(d, time.Duration(i)*time.Millisecond)
	}
	for _, c := range []struct {
		p    float64
		want time.Duration
	}{{0.5, 50 * time.Millisecond}, {0.99, 99 * time.Millisecond}, {1, 100 * time.Millisecond}, {0.001, time.Millisecond}} {
		if got := Percentile(d, c.p); got != c.want {
			t.Errorf("p%v = %v, want %v", c.p, got, c.want)
		}
	}
	if Percentile(nil, 0.5) != 0 {
		t.Error("empty")
	}
}

func TestProcCPU(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Fatalf("no /proc: the CPU figures of the benchmark need Linux's /proc (%v)", err)
	}
	if v := procCPU(os.Getpid()); v < 0 {
		t.Errorf("procCPU(self) = %v", v)
	}
	if v := procCPU(-5); v != -1 {
		t.Errorf("procCPU(-5) = %v", v)
	}
}

// TestSmoke runs every benchmark with tiny counts: the driver works end to
// end on real redis-server processes and playgrounds (the numbers mean
// nothing here).
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	for _, tool := range []string{"redis-server", "redis-benchmark"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s not on PATH: run \"go tool task deps\"", tool)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	env := Env{Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)}
	rep := Run(ctx, env, Config{
		Endpoint: EndpointConfig{Requests: 2000, Clients: 10},
		Memory:   MemoryConfig{Keys: 3000},
		Lag:      LagConfig{Rate: 500, Duration: time.Second, Workers: 4},
		Catchup:  CatchupConfig{Ops: 3000, KeySpace: 1000},
	})
	if len(rep.Errors) > 0 {
		t.Fatalf("errors: %v", rep.Errors)
	}
	if rep.Endpoint == nil || len(rep.Endpoint.Rows) != 6 {
		t.Fatalf("endpoint rows: %+v", rep.Endpoint)
	}
	for _, r := range rep.Endpoint.Rows {
		if r.Raw.RPS <= 0 || r.Child.RPS <= 0 || r.Floor.RPS <= 0 {
			t.Errorf("row without a rate: %+v", r)
		}
	}
	if m := rep.Memory; m.Raw.DB0Keys != 3001 || m.Child.DB0Keys != 3001 || m.Ratio <= 0 {
		t.Errorf("memory: %+v", m)
	}
	if l := rep.Lag; l.Samples == 0 || l.Lost != 0 || l.Writes != 500 {
		t.Errorf("lag: %+v", l)
	}
	if c := rep.Catchup; c.Backlog < 3000 || c.ApplyRate <= 0 {
		t.Errorf("catch-up: %+v", c)
	}
	var buf bytes.Buffer
	rep.WriteText(&buf)
	for _, s := range []string{"1. Endpoint", "2. Memory", "3. Replication lag", "4. Catch-up", "nproc"} {
		if !strings.Contains(buf.String(), s) {
			t.Errorf("report lacks %q:\n%s", s, buf.String())
		}
	}
}

// TestCatchupKinds: every kind --catchup-kind offers has a writer, each is
// offered once, and an unknown kind is refused.
func TestCatchupKinds(t *testing.T) {
	kinds := CatchupKinds()
	if len(kinds) != len(catchupWrites) {
		t.Errorf("%d kinds offered, %d writers", len(kinds), len(catchupWrites))
	}
	seen := map[string]bool{}
	for _, k := range kinds {
		if catchupWrite(k) == nil || seen[k] {
			t.Errorf("kind %q has no writer or is offered twice", k)
		}
		seen[k] = true
	}
	if _, err := Catchup(context.Background(), Env{}, CatchupConfig{Kind: "lpush"}); err == nil || !strings.Contains(err.Error(), "lpush") {
		t.Errorf("an unknown kind: %v", err)
	}
}
