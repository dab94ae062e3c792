package bench

import (
	"context"
	"fmt"
	"math"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"golang.org/x/time/rate"
)

// LagConfig sets the replication lag benchmark.
type LagConfig struct {
	Rate        float64       // writes/s to region A, default 5000
	Duration    time.Duration // how long the writer writes, default 30s
	Workers     int           // concurrent writer connections, default 64
	SampleEvery int           // every n-th write is timed, default 10
	Poll        time.Duration // pause between the reader's polls of region B, default 1ms
	Timeout     time.Duration // a sample not visible in B after this counts as lost, default 10s
}

func (c *LagConfig) defaults() {
	if c.Rate == 0 {
		c.Rate = 5000
	}
	if c.Duration == 0 {
		c.Duration = 30 * time.Second
	}
	if c.Workers == 0 {
		c.Workers = 64
	}
	if c.SampleEvery == 0 {
		c.SampleEvery = 10
	}
	if c.Poll == 0 {
		c.Poll = time.Millisecond
	}
	if c.Timeout == 0 {
		c.Timeout = 10 * time.Second
	}
}

// LagResult is the replication lag benchmark's outcome.
type LagResult struct {
	Config       LagConfig `json:"config"`
	Writes       int64     `json:"writes"` // acknowledged by region A
	WriteErrors  int64     `json:"write_errors"`
	Seconds      float64   `json:"seconds"`
	AchievedRate float64   `json:"achieved_writes_per_sec"`
	Samples      int       `json:"samples"` // timed writes seen in region B
	Lost         int       `json:"lost"`    // timed writes not seen within Timeout
	MinMs        float64   `json:"min_ms"`
	P50Ms        float64   `json:"p50_ms"`
	P90Ms        float64   `json:"p90_ms"`
	P99Ms        float64   `json:"p99_ms"`
	MaxMs        float64   `json:"max_ms"`
	TargetP99Ms  float64   `json:"target_p99_ms"`
	Pass         bool      `json:"pass"`
}

type lagSample struct {
	key, val string
	ack      time.Time
}

// Lag runs a two-region playground, writes at a sustained rate to region A
// (SET lag:<i> <send time in ns>, unique keys) and measures, for every
// SampleEvery-th write, the time from A's acknowledgement until region B's
// endpoint returns the value.
func Lag(ctx context.Context, env Env, cfg LagConfig) (*LagResult, error) {
	cfg.defaults()
	pl, err := env.startPlay(ctx, 2)
	if err != nil {
		return nil, err
	}
	defer pl.Close()
	a, b := pl.Regions[0], pl.Regions[1]
	if err := replicate(ctx, a.Addr, b.Addr, 60*time.Second); err != nil {
		return nil, err
	}
	env.say("lag: %.0f writes/s for %s to %s (%s), timing every %d-th in %s (%s)", cfg.Rate, cfg.Duration, a.Name, a.Addr, cfg.SampleEvery, b.Name, b.Addr)

	total := int64(cfg.Rate * cfg.Duration.Seconds())
	samples := make(chan lagSample, total/int64(cfg.SampleEvery)+1)
	wc := client(a.Addr, 0, cfg.Workers)
	defer func() { _ = wc.Close() }()
	rc := client(b.Addr, 0, 2)
	defer func() { _ = rc.Close() }()

	res := &LagResult{Config: cfg, TargetP99Ms: 50}
	var lags []time.Duration
	readerDone := make(chan error, 1)
	go func() {
		var err error
		lags, res.Lost, err = lagReader(ctx, rc.MGet, samples, cfg)
		readerDone <- err
	}()

	// The writer: Workers connections share one limiter; bounded by count
	// and by time (Duration plus a grace period).
	lim := rate.NewLimiter(rate.Limit(cfg.Rate), cfg.Workers)
	wctx, cancel := context.WithTimeout(ctx, cfg.Duration+15*time.Second)
	defer cancel()
	var next, acked, errs atomic.Int64
	var last atomic.Int64 // unix ns of the last acknowledgement
	start := time.Now()
	var wg sync.WaitGroup
	for range cfg.Workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := next.Add(1) - 1
				if i >= total || lim.Wait(wctx) != nil {
					return
				}
				key := "lag:" + strconv.FormatInt(i, 10)
				val := strconv.FormatInt(time.Now().UnixNano(), 10)
				if err := wc.Set(wctx, key, val, 0).Err(); err != nil {
					errs.Add(1)
					continue
				}
				ack := time.Now()
				acked.Add(1)
				last.Store(ack.UnixNano())
				if i%int64(cfg.SampleEvery) == 0 {
					samples <- lagSample{key: key, val: val, ack: ack}
				}
			}
		}()
	}
	wg.Wait()
	close(samples)
	if err := <-readerDone; err != nil {
		return nil, err
	}
	res.Writes, res.WriteErrors = acked.Load(), errs.Load()
	if l := last.Load(); l > 0 {
		res.Seconds = time.Unix(0, l).Sub(start).Seconds()
		res.AchievedRate = float64(res.Writes) / res.Seconds
	}
	res.Samples = len(lags)
	if len(lags) > 0 {
		sort.Slice(lags, func(i, j int) bool { return lags[i] < lags[j] })
		res.MinMs = ms(lags[0])
		res.P50Ms = ms(Percentile(lags, 0.50))
		res.P90Ms = ms(Percentile(lags, 0.90))
		res.P99Ms = ms(Percentile(lags, 0.99))
		res.MaxMs = ms(lags[len(lags)-1])
	}
	res.Pass = res.Samples > 0 && res.Lost == 0 && res.P99Ms <= res.TargetP99Ms
	return res, nil
}

// lagReader polls region B for the pending samples with one MGET per round
// and returns the lag of every sample seen and the number not seen within
// cfg.Timeout. It ends when samples is closed and nothing is pending.
func lagReader(ctx context.Context, mget func(ctx context.Context, keys ...string) *redis.SliceCmd, samples <-chan lagSample, cfg LagConfig) ([]time.Duration, int, error) {
	var (
		lags    []time.Duration
		lost    int
		pending []lagSample
		open    = true
	)
	deadline := time.Now().Add(cfg.Duration + 15*time.Second + cfg.Timeout + 5*time.Second)
	for time.Now().Before(deadline) {
		// Collect new samples; block only when there is nothing to poll.
		for open {
			if len(pending) == 0 {
				s, ok := <-samples
				if !ok {
					open = false
					break
				}
				pending = append(pending, s)
				continue
			}
			select {
			case s, ok := <-samples:
				if !ok {
					open = false
				} else {
					pending = append(pending, s)
					continue
				}
			default:
			}
			break
		}
		if len(pending) == 0 {
			return lags, lost, nil
		}
		n := min(len(pending), 1000)
		keys := make([]string, n)
		for i := range n {
			keys[i] = pending[i].key
		}
		vals, err := mget(ctx, keys...).Result()
		if err != nil {
			return nil, 0, fmt.Errorf("bench: reading region B: %w", err)
		}
		now := time.Now()
		keep := pending[:0]
		for i, s := range pending {
			switch {
			case i < n && vals[i] == s.val:
				lags = append(lags, now.Sub(s.ack))
			case now.Sub(s.ack) > cfg.Timeout:
				lost++
			default:
				keep = append(keep, s)
			}
		}
		pending = keep
		time.Sleep(cfg.Poll)
	}
	return lags, lost + len(pending), nil
}

// Percentile returns the p-quantile (0 < p <= 1) of sorted durations by the
// nearest-rank method.
func Percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(math.Ceil(p*float64(len(sorted)))) - 1
	return sorted[max(0, min(i, len(sorted)-1))]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }
