package bench

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// MemoryConfig sets the memory benchmark.
type MemoryConfig struct {
	Keys     int    // string keys written, default 1,000,000
	Value    string // every key's value, default "xxx" (3 bytes)
	Conns    int    // loader connections, default 8
	Pipeline int    // SETs per pipeline, default 500
}

func (c *MemoryConfig) defaults() {
	if c.Keys == 0 {
		c.Keys = 1_000_000
	}
	if c.Value == "" {
		c.Value = "xxx"
	}
	if c.Conns == 0 {
		c.Conns = 8
	}
	if c.Pipeline == 0 {
		c.Pipeline = 500
	}
}

// MemorySide is what one Redis holds after the load.
type MemorySide struct {
	BaselineUsed int64   `json:"baseline_used_memory"`
	Used         int64   `json:"used_memory"`
	Delta        int64   `json:"used_memory_delta"` // Used - BaselineUsed: everything the load added
	DB0Keys      int64   `json:"db0_keys"`
	DB1Keys      int64   `json:"db1_keys"`
	DB0Bytes     int64   `json:"db0_memory_usage_sum"` // sum of MEMORY USAGE over database 0
	DB1Bytes     int64   `json:"db1_memory_usage_sum"`
	LoadSeconds  float64 `json:"load_seconds"`
	LoadRate     float64 `json:"load_keys_per_sec"`
	DrainSeconds float64 `json:"drain_seconds,omitempty"` // child: until the op log was shipped and trimmed
}

// MemoryResult compares raw Redis and the child.
type MemoryResult struct {
	Config   MemoryConfig `json:"config"`
	Raw      MemorySide   `json:"raw"`
	Child    MemorySide   `json:"child"`
	Ratio    float64      `json:"ratio"`     // Child.Delta / Raw.Delta
	DB0Ratio float64      `json:"db0_ratio"` // Child.DB0Bytes / Raw.DB0Bytes
	Target   float64      `json:"target"`
	Pass     bool         `json:"pass"`
}

// Memory writes the same keys and values to a raw redis-server and through
// the child of a one-region playground and compares the memory each Redis
// uses for them.
func Memory(ctx context.Context, env Env, cfg MemoryConfig) (*MemoryResult, error) {
	cfg.defaults()
	res := &MemoryResult{Config: cfg, Target: 1.5}

	raw, err := startRaw(ctx)
	if err != nil {
		return nil, err
	}
	env.say("memory: %d keys to raw Redis %s", cfg.Keys, raw.Addr())
	res.Raw, err = measureMemory(ctx, cfg, raw.Addr(), raw.Addr(), nil)
	raw.Stop()
	if err != nil {
		return nil, fmt.Errorf("raw redis: %w", err)
	}

	pl, err := env.startPlay(ctx, 1)
	if err != nil {
		return nil, err
	}
	defer pl.Close()
	r := pl.Regions[0]
	eng := r.Daemon.Engine
	env.say("memory: %d keys through the child %s (Redis %s)", cfg.Keys, r.Addr, eng.Redis().Options().Addr)
	drained := func() error {
		return waitFor(ctx, 10*time.Minute, 20*time.Millisecond, "the op log to be shipped and trimmed", func() (bool, error) {
			n, err := eng.LogLen(ctx)
			return n == 0, err
		})
	}
	res.Child, err = measureMemory(ctx, cfg, eng.Redis().Options().Addr, r.Addr, drained)
	if err != nil {
		return nil, fmt.Errorf("child: %w", err)
	}
	res.Ratio = ratio(float64(res.Child.Delta), float64(res.Raw.Delta))
	res.DB0Ratio = ratio(float64(res.Child.DB0Bytes), float64(res.Raw.DB0Bytes))
	res.Pass = res.Ratio > 0 && res.Ratio <= res.Target
	return res, nil
}

// measureMemory loads the keys through loadAddr and measures the Redis at
// redisAddr before and after. drained, if set, waits until the load's side
// effects that are not meant to stay (the op log) are gone.
func measureMemory(ctx context.Context, cfg MemoryConfig, redisAddr, loadAddr string, drained func() error) (MemorySide, error) {
	var s MemorySide
	c0, c1 := client(redisAddr, 0, 4), client(redisAddr, 1, 4)
	defer func() { _ = c0.Close(); _ = c1.Close() }()
	// The playground's readiness probe left bench:probe in the child; raw
	// Redis gets it too, so both hold the same keys (Keys + 1).
	if err := pipelinedSets(ctx, loadAddr, 1, 1, 1, func(int) string { return "bench:probe" }, "1"); err != nil {
		return s, err
	}
	if drained != nil {
		if err := drained(); err != nil {
			return s, err
		}
	}
	if err := quiet(ctx, c0); err != nil {
		return s, err
	}
	var err error
	if s.BaselineUsed, err = infoInt(ctx, c0, "memory", "used_memory"); err != nil {
		return s, err
	}
	start := time.Now()
	if err := pipelinedSets(ctx, loadAddr, cfg.Keys, cfg.Conns, cfg.Pipeline, StringKey, cfg.Value); err != nil {
		return s, err
	}
	s.LoadSeconds = time.Since(start).Seconds()
	s.LoadRate = float64(cfg.Keys) / s.LoadSeconds
	if drained != nil {
		t := time.Now()
		if err := drained(); err != nil {
			return s, err
		}
		s.DrainSeconds = time.Since(t).Seconds()
	}
	if err := quiet(ctx, c0); err != nil {
		return s, err
	}
	if s.Used, err = infoInt(ctx, c0, "memory", "used_memory"); err != nil {
		return s, err
	}
	s.Delta = s.Used - s.BaselineUsed
	if s.DB0Keys, err = c0.DBSize(ctx).Result(); err != nil {
		return s, err
	}
	if s.DB1Keys, err = c1.DBSize(ctx).Result(); err != nil {
		return s, err
	}
	if s.DB0Bytes, err = memoryUsageSum(ctx, c0); err != nil {
		return s, err
	}
	if s.DB1Bytes, err = memoryUsageSum(ctx, c1); err != nil {
		return s, err
	}
	return s, nil
}

// quiet waits until Redis is not rewriting its AOF or saving (those hold
// buffers that used_memory counts).
func quiet(ctx context.Context, c *redis.Client) error {
	return waitFor(ctx, 2*time.Minute, 50*time.Millisecond, "redis to finish its AOF rewrite", func() (bool, error) {
		s, err := c.Info(ctx, "persistence").Result()
		if err != nil {
			return false, err
		}
		for _, busy := range []string{"aof_rewrite_in_progress:1", "aof_rewrite_scheduled:1", "rdb_bgsave_in_progress:1"} {
			if strings.Contains(s, busy) {
				return false, nil
			}
		}
		return true, nil
	})
}

// pipelinedSets writes n keys key(0) ... key(n-1) with value through
// addr, over conns connections that each send pipelines of pipeline SETs.
func pipelinedSets(ctx context.Context, addr string, n, conns, pipeline int, key func(int) string, value string) error {
	return pipelinedWrites(ctx, addr, n, conns, pipeline, func(pipe redis.Pipeliner, i int) {
		pipe.Set(ctx, key(i), value, 0)
	})
}

// pipelinedWrites sends the writes write(pipe, 0) ... write(pipe, n-1)
// through addr, over conns connections that each send pipelines of
// pipeline writes, and returns the first error.
func pipelinedWrites(ctx context.Context, addr string, n, conns, pipeline int, write func(pipe redis.Pipeliner, i int)) error {
	c := client(addr, 0, conns)
	defer func() { _ = c.Close() }()
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	per := (n + conns - 1) / conns
	for w := range conns {
		lo, hi := w*per, min((w+1)*per, n)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := lo; i < hi; i += pipeline {
				pipe := c.Pipeline()
				for k := i; k < min(i+pipeline, hi); k++ {
					write(pipe, k)
				}
				if _, err := pipe.Exec(ctx); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	return <-errs
}

// StringKey is the name of the memory benchmark's key i (16 bytes, as
// redis-benchmark's key:__rand_int__).
func StringKey(i int) string { return fmt.Sprintf("key:%012d", i) }

// memoryUsageSum adds MEMORY USAGE (SAMPLES 0: exact) of every key of the
// client's database.
func memoryUsageSum(ctx context.Context, c *redis.Client) (int64, error) {
	var sum int64
	var cursor uint64
	for range 10_000_000 { // bounded: at most one round per key
		keys, next, err := c.Scan(ctx, cursor, "*", 1000).Result()
		if err != nil {
			return 0, err
		}
		pipe := c.Pipeline()
		cmds := make([]*redis.IntCmd, len(keys))
		for i, k := range keys {
			cmds[i] = pipe.MemoryUsage(ctx, k, 0)
		}
		if len(keys) > 0 {
			if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
				return 0, err
			}
		}
		for _, cmd := range cmds {
			sum += cmd.Val() // a key that expired in between counts 0
		}
		if cursor = next; cursor == 0 {
			return sum, nil
		}
	}
	return 0, fmt.Errorf("bench: SCAN did not finish")
}

func fmtBytes(n int64) string {
	switch {
	case n >= 1<<30 || n <= -(1<<30):
		return strconv.FormatFloat(float64(n)/(1<<30), 'f', 2, 64) + " GiB"
	case n >= 1<<20 || n <= -(1<<20):
		return strconv.FormatFloat(float64(n)/(1<<20), 'f', 1, 64) + " MiB"
	default:
		return strconv.FormatFloat(float64(n)/(1<<10), 'f', 1, 64) + " KiB"
	}
}
