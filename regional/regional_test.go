package regional_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/globalreplica/globalreplica/regional"
)

// testOptions are the go-redis options of the tests' clients: short
// timeouts, so a region that is away fails commands quickly.
func testOptions() *redis.Options {
	return &redis.Options{DialTimeout: 500 * time.Millisecond, DialerRetries: 1, ReadTimeout: time.Second, WriteTimeout: time.Second, MaxRetries: 1}
}

// TestFailoverWhileWriting: a client writes in a bounded loop while the
// child of its preferred region stops. It moves to the next region within
// the configured window, fails back once the region has been healthy for
// the hold time, and every write it reported successful is in every region
// once the channels drain.
func TestFailoverWhileWriting(t *testing.T) {
	rs := startRegions(t, "sgp", "fra", "iad")
	sgp := rs[0]
	evs := &events{t: t}
	cfg := regional.Config{
		Regions:          []regional.Region{rs[0].region(), rs[1].region(), rs[2].region()},
		Options:          testOptions(),
		FailureThreshold: 3,
		ProbeInterval:    100 * time.Millisecond,
		ProbeTimeout:     500 * time.Millisecond,
		HoldTime:         2 * time.Second,
		OnEvent:          evs.add,
	}
	// The longest the client may take to leave a region that stopped:
	// FailureThreshold probes, the last one timing out, and a round of
	// slack for a loaded machine.
	window := time.Duration(cfg.FailureThreshold+1)*cfg.ProbeInterval + cfg.ProbeTimeout + time.Second
	ctx := context.Background()
	c, err := regional.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	if c.Active() != "sgp" {
		t.Fatalf("active %q at start, want sgp", c.Active())
	}

	var (
		mu    sync.Mutex
		acked = map[string]string{}
		fails atomic.Int64
		stop  = make(chan struct{})
		done  = make(chan struct{})
	)
	count := func() int {
		mu.Lock()
		defer mu.Unlock()
		return len(acked)
	}
	go func() {
		defer close(done)
		deadline := time.Now().Add(90 * time.Second)
		for i := 0; i < 50000 && time.Now().Before(deadline); i++ {
			select {
			case <-stop:
				return
			default:
			}
			k, v := fmt.Sprintf("w:%05d", i), fmt.Sprintf("v%d", i)
			wctx, cancel := context.WithTimeout(ctx, 2*time.Second)
			err := c.Set(wctx, k, v, 0).Err()
			cancel()
			if err != nil {
				fails.Add(1)
			} else {
				mu.Lock()
				acked[k] = v
				mu.Unlock()
			}
			time.Sleep(5 * time.Millisecond)
		}
	}()
	waitCount := func(n int, what string) {
		t.Helper()
		deadline := time.Now().Add(20 * time.Second)
		for count() < n {
			if time.Now().After(deadline) {
				t.Fatalf("%s: %d writes acknowledged, want %d (%d failed)", what, count(), n, fails.Load())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	waitCount(30, "before the stop")

	stopped := time.Now()
	sgp.stop(t)
	down := evs.wait(regional.Failover, "fra", 3*window)
	if down.From != "sgp" || down.To != "fra" {
		t.Fatalf("failover event %+v, want sgp -> fra", down)
	}
	if took := down.At.Sub(stopped); took > window {
		t.Errorf("failover took %s, the configured window is %s", took, window)
	}
	if _, ok := evs.find(regional.RegionDown, "sgp"); !ok {
		t.Errorf("no region-down event for sgp: %v", evs.all())
	}
	if c.Active() != "fra" {
		t.Fatalf("active %q after the failover, want fra", c.Active())
	}
	waitCount(count()+30, "after the failover")

	restarted := time.Now()
	sgp.start(t)
	back := evs.wait(regional.Failback, "sgp", cfg.HoldTime+20*time.Second)
	up, ok := evs.find(regional.RegionUp, "sgp")
	if !ok {
		t.Fatalf("fail-back without a region-up event for sgp: %v", evs.all())
	}
	if back.From != "fra" || back.At.Sub(up.At) < cfg.HoldTime || back.At.Sub(restarted) < cfg.HoldTime {
		t.Fatalf("fail-back %+v: sgp up at %s, restarted at %s; hold time %s", back, up.At, restarted, cfg.HoldTime)
	}
	if c.Active() != "sgp" {
		t.Fatalf("active %q after the fail-back, want sgp", c.Active())
	}
	waitCount(count()+30, "after the fail-back")
	close(stop)
	<-done

	mu.Lock()
	want := acked
	mu.Unlock()
	t.Logf("%d writes acknowledged, %d failed; failover %s after the stop, fail-back %s after the restart",
		len(want), fails.Load(), down.At.Sub(stopped).Round(time.Millisecond), back.At.Sub(restarted).Round(time.Millisecond))
	for _, r := range rs {
		waitKeys(t, r.direct, r.name, want)
	}
}

// TestLagAwareChoice: the preferred region's inbound channel is paused and
// its origin writes, so it lags. A client with a lag condition leaves it
// (or, started now, avoids it) and fails back once it caught up; a client
// without one uses it.
func TestLagAwareChoice(t *testing.T) {
	rs := startRegions(t, "sgp", "fra")
	sgp, fra := rs[0], rs[1]
	ctx := context.Background()
	if err := sgp.direct.Set(ctx, "warm", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	waitKeys(t, fra.direct, "fra", map[string]string{"warm": "1"})
	base := regional.Config{
		Regions:       []regional.Region{fra.region(), sgp.region()},
		Options:       testOptions(),
		ProbeInterval: 100 * time.Millisecond,
		HoldTime:      time.Second,
	}
	newClient := func(maxLag time.Duration) (*regional.Client, *events) {
		t.Helper()
		cfg, evs := base, &events{t: t}
		cfg.MaxLag, cfg.OnEvent = maxLag, evs.add
		c, err := regional.New(ctx, cfg)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = c.Close() })
		return c, evs
	}
	running, runningEvs := newClient(100 * time.Millisecond)
	if running.Active() != "fra" {
		t.Fatalf("active %q before the lag, want fra", running.Active())
	}

	recv, ok := fra.d.Node.Receiver("sgp")
	if !ok {
		t.Fatal("fra has no channel from sgp")
	}
	recv.Pause()
	for i := range 3 {
		if err := sgp.direct.Set(ctx, fmt.Sprintf("behind%d", i), "x", 0).Err(); err != nil {
			t.Fatal(err)
		}
	}
	moved := runningEvs.wait(regional.Failover, "sgp", 15*time.Second)
	if moved.From != "fra" || !strings.Contains(moved.Reason, "lagging behind sgp") || !strings.Contains(moved.Reason, "max_lag 100ms") {
		t.Fatalf("failover on lag: %+v", moved)
	}
	waitHTTP(t, "http://"+fra.http+"/availability?max_lag=100ms", http.StatusServiceUnavailable)

	aware, awareEvs := newClient(100 * time.Millisecond)
	plain, _ := newClient(0)
	if aware.Active() != "sgp" || plain.Active() != "fra" || running.Active() != "sgp" {
		t.Fatalf("active: started with max lag %q (want sgp), running with max lag %q (want sgp), without %q (want fra)",
			aware.Active(), running.Active(), plain.Active())
	}
	if ev, ok := awareEvs.find(regional.RegionDown, "fra"); !ok || !strings.Contains(ev.Reason, "lagging behind sgp") {
		t.Fatalf("region-down event of fra at start: %+v (found %v)", ev, ok)
	}
	if err := aware.Set(ctx, "via-aware", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := plain.Set(ctx, "via-plain", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if v, _ := sgp.direct.Get(ctx, "via-aware").Result(); v != "1" {
		t.Errorf("the lag-aware client's write is not in sgp: %q", v)
	}
	if v, _ := fra.direct.Get(ctx, "via-aware").Result(); v != "" {
		t.Errorf("the lag-aware client's write reached fra over a paused channel: %q", v)
	}
	if v, _ := fra.direct.Get(ctx, "via-plain").Result(); v != "1" {
		t.Errorf("the plain client's write is not in fra: %q", v)
	}

	recv.Resume()
	for _, c := range []struct {
		c   *regional.Client
		evs *events
	}{{running, runningEvs}, {aware, awareEvs}} {
		back := c.evs.wait(regional.Failback, "fra", base.HoldTime+20*time.Second)
		up, _ := c.evs.find(regional.RegionUp, "fra")
		if back.From != "sgp" || back.At.Sub(up.At) < base.HoldTime {
			t.Fatalf("fail-back %+v, fra up at %s", back, up.At)
		}
		if c.c.Active() != "fra" {
			t.Fatalf("active %q after fra caught up, want fra", c.c.Active())
		}
	}
}

// TestAllRegionsDown: with no region reachable New fails quickly with
// ErrNoRegion naming each region; when every region goes away later,
// commands fail at once with ErrNoRegion, and work again when one returns.
// An endpoint that serves another region than configured is refused.
func TestAllRegionsDown(t *testing.T) {
	closed := func() string {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := ln.Addr().String()
		_ = ln.Close()
		return addr
	}
	// A port that takes connections and never answers: the probe must
	// give up after ProbeTimeout.
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = silent.Close() }()
	cfg := regional.Config{
		Regions: []regional.Region{
			{Name: "sgp", Addr: closed(), HTTP: closed()},
			{Name: "fra", Addr: closed()},
			{Name: "iad", Addr: closed(), HTTP: silent.Addr().String()},
		},
		Options:      testOptions(),
		ProbeTimeout: 300 * time.Millisecond,
	}
	start := time.Now()
	_, err = regional.New(context.Background(), cfg)
	if !errors.Is(err, regional.ErrNoRegion) || !strings.Contains(err.Error(), "sgp: availability") || !strings.Contains(err.Error(), "fra: PING") ||
		!strings.Contains(err.Error(), "iad: availability") || !strings.Contains(err.Error(), "deadline exceeded") {
		t.Fatalf("New with every region down: %v", err)
	}
	took := time.Since(start)
	if took > cfg.ProbeTimeout+2*time.Second {
		t.Errorf("New took %s with every region down (probe timeout %s)", took, cfg.ProbeTimeout)
	}
	t.Logf("New after %s: %v", took.Round(time.Millisecond), err)

	rs := startRegions(t, "sgp")
	sgp := rs[0]
	wrong := regional.Config{Regions: []regional.Region{{Name: "fra", Addr: sgp.resp, HTTP: sgp.http}}}
	if _, err := regional.New(context.Background(), wrong); !errors.Is(err, regional.ErrWrongRegion) || !strings.Contains(err.Error(), "serves region sgp, configured as fra") {
		t.Fatalf("New with a mislabelled region: %v", err)
	}

	evs := &events{t: t}
	c, err := regional.New(context.Background(), regional.Config{
		Regions: []regional.Region{sgp.region()}, Options: testOptions(),
		ProbeInterval: 100 * time.Millisecond, ProbeTimeout: 500 * time.Millisecond, OnEvent: evs.add,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	var hooked atomic.Int64
	c.AddHook(countHook{&hooked})
	ctx := context.Background()
	cmds, err := c.Pipelined(ctx, func(p redis.Pipeliner) error {
		p.Set(ctx, "p1", "a", 0)
		p.Incr(ctx, "p2")
		return nil
	})
	if err != nil || len(cmds) != 2 || cmds[1].(*redis.IntCmd).Val() != 1 || hooked.Load() != 1 {
		t.Fatalf("pipeline: %v %v, hook saw %d pipelines", cmds, err, hooked.Load())
	}
	if v, err := c.Do(ctx, "GET", "p1").Text(); v != "a" || err != nil {
		t.Fatalf("Do GET: %q %v", v, err)
	}

	sgp.stop(t)
	evs.wait(regional.NoRegion, "", 10*time.Second)
	start = time.Now()
	err = c.Set(ctx, "k", "v", 0).Err()
	if !errors.Is(err, regional.ErrNoRegion) || !strings.Contains(err.Error(), "sgp: ") || time.Since(start) > 100*time.Millisecond {
		t.Fatalf("a command with every region down: %v after %s", err, time.Since(start))
	}
	if _, err := c.Pipelined(ctx, func(p redis.Pipeliner) error { p.Get(ctx, "p1"); return nil }); !errors.Is(err, regional.ErrNoRegion) {
		t.Fatalf("a pipeline with every region down: %v", err)
	}

	sgp.start(t)
	if ev := evs.wait(regional.Failover, "sgp", 15*time.Second); ev.From != "" {
		t.Fatalf("recovery event %+v", ev)
	}
	if v, err := c.Get(ctx, "p1").Result(); v != "a" || err != nil {
		t.Fatalf("GET after the region returned: %q %v", v, err)
	}
}

// countHook counts the pipelines it sees that start with a SET (not those
// go-redis sends itself on a new connection).
type countHook struct{ n *atomic.Int64 }

func (h countHook) DialHook(next redis.DialHook) redis.DialHook          { return next }
func (h countHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook { return next }
func (h countHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		if cmds[0].Name() == "set" {
			h.n.Add(1)
		}
		return next(ctx, cmds)
	}
}

// TestConfigErrors: a bad or conflicting config is refused by New with an
// error naming the problem, before any connection is made.
func TestConfigErrors(t *testing.T) {
	r1 := regional.Region{Name: "sgp", Addr: "127.0.0.1:7000", HTTP: "127.0.0.1:9000"}
	r2 := regional.Region{Name: "fra", Addr: "127.0.0.1:7001", HTTP: "http://127.0.0.1:9001"}
	for _, tc := range []struct {
		name string
		cfg  regional.Config
		want string
	}{
		{"no regions", regional.Config{}, "no regions"},
		{"duplicate", regional.Config{Regions: []regional.Region{r1, r1}}, "region sgp is listed twice"},
		{"bad name", regional.Config{Regions: []regional.Region{{Name: "Fra", Addr: "h:1"}}}, `name "Fra"`},
		{"no port", regional.Config{Regions: []regional.Region{{Name: "fra", Addr: "localhost"}}}, `Addr "localhost": not host:port`},
		{"port range", regional.Config{Regions: []regional.Region{{Name: "fra", Addr: "h:99999"}}}, `port "99999"`},
		{"no host", regional.Config{Regions: []regional.Region{{Name: "fra", Addr: ":6379"}}}, "no host"},
		{"same addr", regional.Config{Regions: []regional.Region{r1, {Name: "fra", Addr: r1.Addr}}}, "regions sgp and fra have the same Addr"},
		{"http scheme", regional.Config{Regions: []regional.Region{{Name: "fra", Addr: "h:1", HTTP: "ftp://h:2"}}}, `scheme "ftp"`},
		{"http path", regional.Config{Regions: []regional.Region{{Name: "fra", Addr: "h:1", HTTP: "h:2/availability"}}}, "the client adds /availability"},
		{"http port", regional.Config{Regions: []regional.Region{{Name: "fra", Addr: "h:1", HTTP: "http://h"}}}, "not host:port"},
		{"hold < interval", regional.Config{Regions: []regional.Region{r1}, ProbeInterval: time.Second, HoldTime: 500 * time.Millisecond}, "HoldTime 500ms is shorter than ProbeInterval 1s"},
		{"negative interval", regional.Config{Regions: []regional.Region{r1}, ProbeInterval: -time.Second}, "ProbeInterval must not be negative"},
		{"negative max lag", regional.Config{Regions: []regional.Region{r1}, MaxLag: -time.Millisecond}, "MaxLag must not be negative"},
		{"negative lag ops", regional.Config{Regions: []regional.Region{r1}, MaxLagOps: -1}, "MaxLagOps must not be negative"},
		{"negative threshold", regional.Config{Regions: []regional.Region{r1}, FailureThreshold: -2}, "FailureThreshold must not be negative"},
		{"lag without http", regional.Config{Regions: []regional.Region{r2, {Name: "iad", Addr: "h:1"}}, MaxLag: time.Second}, "region iad has no HTTP endpoint"},
		{"strict alone", regional.Config{Regions: []regional.Region{r1}, StrictLag: true}, "StrictLag needs MaxLag or MaxLagOps"},
		{"options addr", regional.Config{Regions: []regional.Region{r1}, Options: &redis.Options{Addr: "h:1"}}, `Options.Addr "h:1" is set`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := regional.New(context.Background(), tc.cfg)
			if err == nil {
				_ = c.Close()
				t.Fatalf("New accepted the config")
			}
			if !errors.Is(err, regional.ErrConfig) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q, want ErrConfig with %q", err, tc.want)
			}
		})
	}
}
