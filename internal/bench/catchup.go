package bench

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/globalreplica/globalreplica/channel"
)

// CatchupConfig sets the catch-up benchmark.
type CatchupConfig struct {
	Ops      int    // backlog written to region A while the channel A→B is paused, default 1,000,000
	Kind     string // the backlog's writes, one of CatchupKinds(); default "set"
	KeySpace int    // writes to keys cu:0 ... cu:KeySpace-1, default 100,000
	Conns    int    // writer connections to A, default 8
	Pipeline int    // writes per pipeline, default 500
	// Profile, when set, receives a Go CPU profile of this process during
	// the apply phase alone (the receiver, the engine, NATS).
	Profile io.Writer `json:"-"`
}

func (c *CatchupConfig) defaults() {
	if c.Ops == 0 {
		c.Ops = 1_000_000
	}
	if c.Kind == "" {
		c.Kind = "set"
	}
	if c.KeySpace == 0 {
		c.KeySpace = 100_000
	}
	if c.Conns == 0 {
		c.Conns = 8
	}
	if c.Pipeline == 0 {
		c.Pipeline = 500
	}
}

// CatchupResult is the catch-up benchmark's outcome.
type CatchupResult struct {
	Config       CatchupConfig `json:"config"`
	Backlog      uint64        `json:"backlog_ops"` // ops B had to apply
	WriteSeconds float64       `json:"write_seconds"`
	WriteRate    float64       `json:"write_ops_per_sec"` // pipelined SETs through A's child
	ShipSeconds  float64       `json:"ship_seconds"`      // from the start of writing until A's op log was empty
	ApplySeconds float64       `json:"apply_seconds"`
	ApplyRate    float64       `json:"apply_ops_per_sec"`
	// Diagnostics: FCALLs in B's Redis during the catch-up (gr_apply
	// batches), Redis's time in them per op, and CPU seconds of B's
	// redis-server and of this process (children, NATS servers).
	ApplyCalls     int64   `json:"apply_fcalls"`
	FastOps        uint64  `json:"fast_ops"`    // ops B's engine applied by its fast path (compare-and-set)
	RedisForks     int64   `json:"redis_forks"` // forks of B's Redis (AOF rewrites) during the catch-up
	RedisUsecPerOp float64 `json:"redis_usec_per_op"`
	RedisCPU       float64 `json:"redis_cpu_seconds"`
	ProcessCPU     float64 `json:"process_cpu_seconds"`
	Target         float64 `json:"target_ops_per_sec"`
	Pass           bool    `json:"pass"`
}

// Catchup pauses the channel A→B of a two-region playground, writes a
// backlog to A, waits until A shipped all of it to its stream, resumes the
// channel and times until B's applied sequence for A reaches A's sequence.
func Catchup(ctx context.Context, env Env, cfg CatchupConfig) (*CatchupResult, error) {
	cfg.defaults()
	write := catchupWrite(cfg.Kind)
	if write == nil {
		return nil, fmt.Errorf("bench: catch-up kind %q: want one of %s", cfg.Kind, strings.Join(CatchupKinds(), ", "))
	}
	pl, err := env.startPlay(ctx, 2)
	if err != nil {
		return nil, err
	}
	defer pl.Close()
	a, b := pl.Regions[0], pl.Regions[1]
	if err := replicate(ctx, a.Addr, b.Addr, 60*time.Second); err != nil {
		return nil, err
	}
	recv, ok := b.Daemon.Node.Receiver(a.Name)
	if !ok {
		return nil, fmt.Errorf("bench: region %s has no channel from %s", b.Name, a.Name)
	}
	recv.Pause()
	if err := waitFor(ctx, 30*time.Second, 5*time.Millisecond, "the channel to pause", func() (bool, error) {
		return recv.Status().State == channel.StatePaused, nil
	}); err != nil {
		return nil, err
	}
	// A fetch in flight when Pause was called may still apply what arrives
	// during its wait (channel.DefaultFetchWait): let it end first.
	time.Sleep(5 * channel.DefaultFetchWait)
	pos, err := b.Daemon.Engine.Position(ctx)
	if err != nil {
		return nil, err
	}
	applied0 := pos.Applied[a.Name]

	env.say("catch-up: channel %s→%s paused; writing %d ops to %s (%s)", a.Name, b.Name, cfg.Ops, a.Name, a.Addr)
	res := &CatchupResult{Config: cfg, Target: 100_000}
	start := time.Now()
	if err := pipelinedWrites(ctx, a.Addr, cfg.Ops, cfg.Conns, cfg.Pipeline, func(pipe redis.Pipeliner, i int) {
		write(ctx, pipe, "cu:"+strconv.Itoa(i%cfg.KeySpace), i/cfg.KeySpace)
	}); err != nil {
		return nil, fmt.Errorf("bench: writing the backlog: %w", err)
	}
	res.WriteSeconds = time.Since(start).Seconds()
	res.WriteRate = float64(cfg.Ops) / res.WriteSeconds
	if err := waitFor(ctx, 10*time.Minute, 10*time.Millisecond, "region A to ship its op log", func() (bool, error) {
		n, err := a.Daemon.Engine.LogLen(ctx)
		return n == 0, err
	}); err != nil {
		return nil, err
	}
	res.ShipSeconds = time.Since(start).Seconds()
	apos, err := a.Daemon.Engine.Position(ctx)
	if err != nil {
		return nil, err
	}
	target := apos.Seq
	if pos, err = b.Daemon.Engine.Position(ctx); err != nil {
		return nil, err
	}
	if pos.Applied[a.Name] != applied0 {
		return nil, fmt.Errorf("bench: the paused channel applied ops (%d → %d)", applied0, pos.Applied[a.Name])
	}
	res.Backlog = target - applied0

	env.say("catch-up: %d ops in %s's stream; resuming %s→%s", res.Backlog, a.Name, a.Name, b.Name)
	brdb := b.Daemon.Engine.Redis()
	calls0, usec0 := fcallStats(ctx, brdb)
	meter := newCPUMeter(redisPID(ctx, brdb), os.Getpid())
	fast0, forks0 := recv.Status().FastOps, forks(ctx, brdb)
	if cfg.Profile != nil {
		if err := pprof.StartCPUProfile(cfg.Profile); err != nil {
			return nil, fmt.Errorf("catch-up profile: %w", err)
		}
		defer pprof.StopCPUProfile() // also when the catch-up fails; stopping twice is harmless
	}
	t0 := time.Now()
	recv.Resume()
	var applied uint64
	if err := waitFor(ctx, 10*time.Minute, 2*time.Millisecond, "region B to catch up", func() (bool, error) {
		p, err := b.Daemon.Engine.Position(ctx)
		applied = p.Applied[a.Name]
		return applied >= target, err
	}); err != nil {
		return nil, fmt.Errorf("%w (applied %d of %d)", err, applied-applied0, res.Backlog)
	}
	res.ApplySeconds = time.Since(t0).Seconds()
	if cfg.Profile != nil {
		pprof.StopCPUProfile()
	}
	res.ApplyRate = float64(res.Backlog) / res.ApplySeconds
	cpu := meter.used()
	res.RedisCPU, res.ProcessCPU = cpu[0], cpu[1]
	calls1, usec1 := fcallStats(ctx, brdb)
	res.ApplyCalls = calls1 - calls0
	res.FastOps = recv.Status().FastOps - fast0
	res.RedisForks = forks(ctx, brdb) - forks0
	if res.Backlog > 0 {
		res.RedisUsecPerOp = float64(usec1-usec0) / float64(res.Backlog)
	}
	res.Pass = res.ApplyRate >= res.Target
	return res, nil
}

// catchupWrites are the kinds of write a catch-up backlog can be made of,
// each with what writes the round-th write of its kind to key: each key is
// written once per round, so every write after the first round merges
// into state the key already has.
var catchupWrites = []struct {
	kind  string
	write func(ctx context.Context, pipe redis.Pipeliner, key string, round int)
}{
	{"set", func(ctx context.Context, pipe redis.Pipeliner, key string, _ int) { pipe.Set(ctx, key, "v", 0) }},
	{"incr", func(ctx context.Context, pipe redis.Pipeliner, key string, _ int) { pipe.Incr(ctx, key) }},
	{"hset", func(ctx context.Context, pipe redis.Pipeliner, key string, round int) {
		pipe.HSet(ctx, key, "f"+strconv.Itoa(round%10), "v")
	}},
	{"sadd", func(ctx context.Context, pipe redis.Pipeliner, key string, round int) {
		pipe.SAdd(ctx, key, "m"+strconv.Itoa(round%10))
	}},
	{"zadd", func(ctx context.Context, pipe redis.Pipeliner, key string, round int) {
		pipe.ZAdd(ctx, key, redis.Z{Score: float64(round), Member: "m" + strconv.Itoa(round%10)})
	}},
	{"set-ex", func(ctx context.Context, pipe redis.Pipeliner, key string, _ int) { pipe.Set(ctx, key, "v", time.Hour) }},
}

// CatchupKinds returns the kinds of write a catch-up backlog can be made of.
func CatchupKinds() []string {
	kinds := make([]string, len(catchupWrites))
	for i, w := range catchupWrites {
		kinds[i] = w.kind
	}
	return kinds
}

// catchupWrite returns the writer of a kind, nil for an unknown kind.
func catchupWrite(kind string) func(ctx context.Context, pipe redis.Pipeliner, key string, round int) {
	for _, w := range catchupWrites {
		if w.kind == kind {
			return w.write
		}
	}
	return nil
}
