// Package bench is the benchmark driver behind `go run ./cmd/bench` (and
// `go tool task bench`): endpoint throughput of the child against raw Redis,
// memory of 1M small strings, replication lag and catch-up rate between
// regions of a playground on this machine. docs/benchmarks.md explains each
// measurement and records results.
package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/internal/playground"
	"github.com/globalreplica/globalreplica/internal/redisproc"
)

// Env is what every benchmark shares: where progress lines go and the
// playground's logger.
type Env struct {
	Progress io.Writer      // progress lines (stderr); nil discards them
	Log      zerolog.Logger // the playground's log
}

func (e Env) say(format string, args ...any) {
	if e.Progress != nil {
		_, _ = fmt.Fprintf(e.Progress, "bench: "+format+"\n", args...)
	}
}

// play is a playground running in the background.
type play struct {
	*playground.Playground
	cancel context.CancelFunc
	done   chan error
	env    Env
}

// startPlay starts a playground of n regions on a free range of loopback
// ports and runs it until Close.
func (e Env) startPlay(ctx context.Context, n int) (*play, error) {
	var lastErr error
	for range 5 {
		base, err := freePortBase(n)
		if err != nil {
			return nil, err
		}
		rctx, cancel := context.WithCancel(context.Background())
		p, err := playground.Start(ctx, playground.Config{Instance: "bench", Regions: n, PortBase: base, Log: e.Log})
		if err != nil {
			cancel()
			lastErr = err
			continue
		}
		pl := &play{Playground: p, cancel: cancel, done: make(chan error, 1), env: e}
		go func() { pl.done <- p.Run(rctx) }()
		for _, r := range p.Regions {
			if err := writable(ctx, r.Addr, 60*time.Second); err != nil {
				pl.Close()
				return nil, fmt.Errorf("bench: region %s: %w", r.Name, err)
			}
		}
		return pl, nil
	}
	return nil, fmt.Errorf("bench: starting a playground of %d regions: %w", n, lastErr)
}

// Close stops the playground and waits (bounded) until it has stopped.
func (p *play) Close() {
	p.cancel()
	select {
	case err := <-p.done:
		if err != nil {
			p.env.say("playground stopped with: %v", err)
		}
	case <-time.After(60 * time.Second):
		// Run did not return: stop the infrastructure anyway.
		p.Playground.Close()
	}
}

// freePortBase finds n consecutive free ports on 127.0.0.1.
func freePortBase(n int) (int, error) {
	start := 20000 + int(time.Now().UnixNano()%20000)
	for base := start; base < 65000-n; base += n + 7 {
		ok := true
		for i := 0; i < n && ok; i++ {
			l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(base+i))
			if err != nil {
				ok = false
				continue
			}
			_ = l.Close()
		}
		if ok {
			return base, nil
		}
	}
	return 0, errors.New("bench: no free port range on 127.0.0.1")
}

// rawRedis is a plain redis-server started with the same options as a
// playground region's Redis (internal/playground: AOF on, no RDB saves).
type rawRedis struct {
	*redisproc.Proc
	dir string
}

func startRaw(ctx context.Context) (*rawRedis, error) {
	dir, err := os.MkdirTemp("", "globalreplica-bench-raw-")
	if err != nil {
		return nil, err
	}
	p, err := redisproc.Start(ctx, redisproc.Options{Dir: dir, AppendOnly: true})
	if err != nil {
		_ = os.RemoveAll(dir)
		return nil, err
	}
	return &rawRedis{Proc: p, dir: dir}, nil
}

func (r *rawRedis) Stop() {
	r.Proc.Stop()
	_ = os.RemoveAll(r.dir)
}

// client returns a go-redis client for addr (a child or a Redis).
func client(addr string, db, pool int) *redis.Client {
	return redis.NewClient(&redis.Options{
		Addr: addr, DB: db, Protocol: 2, DisableIdentity: true,
		PoolSize: pool, MinIdleConns: 0,
		ReadTimeout: 30 * time.Second, WriteTimeout: 30 * time.Second,
	})
}

// waitFor polls cond every interval until it reports true, returns an
// error, or timeout passes.
func waitFor(ctx context.Context, timeout, interval time.Duration, what string, cond func() (bool, error)) error {
	deadline := time.Now().Add(timeout)
	for {
		ok, err := cond()
		if err != nil {
			return fmt.Errorf("bench: waiting for %s: %w", what, err)
		}
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("bench: %s did not happen within %s", what, timeout)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(interval):
		}
	}
}

// infoField returns one field of INFO section.
func infoField(ctx context.Context, c *redis.Client, section, field string) (string, error) {
	s, err := c.Info(ctx, section).Result()
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == field {
			return v, nil
		}
	}
	return "", fmt.Errorf("INFO %s has no %s", section, field)
}

func infoInt(ctx context.Context, c *redis.Client, section, field string) (int64, error) {
	v, err := infoField(ctx, c, section, field)
	if err != nil {
		return 0, err
	}
	return strconv.ParseInt(v, 10, 64)
}

// writable waits until the child at addr accepts writes: a region that is
// still recovering its state answers TRYAGAIN (LOADING while Redis loads).
func writable(ctx context.Context, addr string, timeout time.Duration) error {
	c := client(addr, 0, 1)
	defer func() { _ = c.Close() }()
	var last error
	err := waitFor(ctx, timeout, 10*time.Millisecond, "the region to accept writes", func() (bool, error) {
		last = c.Set(ctx, "bench:probe", "1", 0).Err()
		if last == nil {
			return true, nil
		}
		if msg := last.Error(); strings.HasPrefix(msg, "TRYAGAIN") || strings.HasPrefix(msg, "LOADING") {
			return false, nil
		}
		return false, last
	})
	if err != nil && last != nil {
		return fmt.Errorf("%w (last reply: %w)", err, last)
	}
	return err
}

// replicate writes a key in region from and waits until region to shows it:
// the channel from → to is up.
func replicate(ctx context.Context, from, to string, timeout time.Duration) error {
	a, b := client(from, 0, 2), client(to, 0, 2)
	defer func() { _ = a.Close(); _ = b.Close() }()
	key := fmt.Sprintf("bench:ready:%d", time.Now().UnixNano())
	if err := a.Set(ctx, key, "1", 0).Err(); err != nil {
		return err
	}
	return waitFor(ctx, timeout, 5*time.Millisecond, "the first write to replicate", func() (bool, error) {
		n, err := b.Exists(ctx, key).Result()
		return n == 1, err
	})
}
