package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// The scenarios' applications: writers that send a bounded number of
// commands through each region's child, the way an application does, and
// a ledger of what was acknowledged. Two families of keys, under a prefix
// of the scenario:
//
//   - counters (<p>:cnt:<i>, fields of <p>:hcnt, members of <p>:zcnt),
//     written only with positive INCR/INCRBY/HINCRBY/ZINCRBY: the test
//     knows the exact total every region must show;
//   - a hot keyspace of every supported type (<p>:s<i>, :c<i>, :h<i>, :t<i>,
//     :z<i>), written with every write command the child supports, so
//     that the regions' writes conflict all the time; only the regions'
//     agreement (channel-manager verify) is checked there.
//
// Writers never retry: a retried increment whose first attempt reached the
// child would count twice. A command that fails with a network error
// (child killed, connection cut) may or may not have been applied; the
// ledger keeps it apart as uncertain, and the check allows the total to
// hold any part of it (increments are positive, so acked <= total <=
// acked + uncertain).

const (
	counterKeys = 4 // keys (and fields, members) of each counter family
	hotKeys     = 6 // keys of each hot family
	hotFields   = 5 // fields or members of each hot collection
)

// ledger is what the writers of one scenario were told.
type ledger struct {
	mu        sync.Mutex
	acked     map[string]int64 // counter → sum of acknowledged increments
	uncertain map[string]int64 // counter → sum of increments that failed with a network error

	written     atomic.Int64 // commands acknowledged (OK or a value)
	refused     atomic.Int64 // commands answered with an error reply (WRONGTYPE, not an integer, TRYAGAIN, ...)
	netErrs     atomic.Int64 // commands that failed with a network error
	notSent     atomic.Int64 // of netErrs: the connection could not even be made
	done        atomic.Int64 // commands sent, whatever their outcome
	firstNetErr atomic.Value

	// errorsUncertain: any error reply other than a plain refusal
	// (TRYAGAIN, WRONGTYPE, not an integer) may hide an applied write, as
	// when the child's Redis dies between applying a write and answering.
	errorsUncertain bool
	// lossAllowed: acknowledged increments may be missing (a Redis master
	// lost before its replica or the stream had them: asynchronous
	// replication); checkCounters reports them instead of failing.
	lossAllowed bool
	lost        int64 // acknowledged increments missing, found by checkCounters
}

func newLedger() *ledger {
	return &ledger{acked: map[string]int64{}, uncertain: map[string]int64{}}
}

// count books an increment of the counter id ("s|key", "h|key|field",
// "z|key|member") by its outcome.
func (l *ledger) count(id string, n int64, err error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case err == nil:
		l.acked[id] += n
	case notSent(err):
	case isNetErr(err), l.errorsUncertain && !plainRefusal(err):
		l.uncertain[id] += n
	}
}

func (l *ledger) outcome(err error) {
	l.done.Add(1)
	switch {
	case err == nil || errors.Is(err, redis.Nil):
		l.written.Add(1)
	case isNetErr(err):
		l.netErrs.Add(1)
		if notSent(err) {
			l.notSent.Add(1)
		}
		l.firstNetErr.CompareAndSwap(nil, err.Error())
	default:
		l.refused.Add(1)
	}
}

// notSent reports whether err is a failure to connect: the command never
// left the client.
func notSent(err error) bool {
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// plainRefusal reports whether err is an error reply that a child gives
// without writing anything.
func plainRefusal(err error) bool {
	s := err.Error()
	return strings.HasPrefix(s, "TRYAGAIN") || strings.HasPrefix(s, "WRONGTYPE") || strings.HasPrefix(s, "ERR value is not")
}

// loadSpec is one scenario's workload.
type loadSpec struct {
	prefix  string   // key prefix of the scenario
	regions []string // regions written to; nil: all
	workers int      // writers per region
	ops     int      // commands per writer
	hot     bool     // mix in the hot keyspace of every type
	pause   time.Duration
	seed    uint64
	ledger  *ledger // shared with other loads of the scenario; nil: a new one
}

// load is a running workload.
type load struct {
	spec    loadSpec
	ledger  *ledger
	wg      sync.WaitGroup
	cancel  context.CancelFunc
	total   int64
	started time.Time
	end     chan struct{} // closed when every writer is done
}

// startLoad starts the writers; wait for them with wait.
func (top *topology) startLoad(ctx context.Context, spec loadSpec) *load {
	if spec.regions == nil {
		spec.regions = regionIDs
	}
	if spec.workers == 0 {
		spec.workers = 3
	}
	ctx, cancel := context.WithCancel(ctx)
	led := spec.ledger
	if led == nil {
		led = newLedger()
	}
	l := &load{spec: spec, ledger: led, cancel: cancel, total: int64(len(spec.regions) * spec.workers * spec.ops),
		started: time.Now(), end: make(chan struct{})}
	for ri, id := range spec.regions {
		r := top.byID[id]
		for w := range spec.workers {
			rng := rand.New(rand.NewPCG(spec.seed, uint64(ri*100+w)))
			l.wg.Add(1)
			go func() {
				defer l.wg.Done()
				for range spec.ops {
					if ctx.Err() != nil {
						return
					}
					err := writeOne(ctx, r.app, rng, spec, l.ledger)
					if isNetErr(err) {
						// The child is away: do not hammer it; the op counts.
						time.Sleep(50 * time.Millisecond)
					} else if spec.pause > 0 {
						time.Sleep(spec.pause)
					}
				}
			}()
		}
	}
	go func() {
		l.wg.Wait()
		close(l.end)
	}()
	return l
}

// done reports whether every writer is done.
func (l *load) done() bool {
	select {
	case <-l.end:
		return true
	default:
		return false
	}
}

// wait waits until every writer sent all its commands.
func (l *load) wait() {
	l.wg.Wait()
	l.cancel()
}

// progress is the share of commands sent so far, 0 to 1.
func (l *load) progress() float64 { return float64(l.ledger.done.Load()) / float64(l.total) }

// waitProgress waits until the writers sent at least share of their commands.
func (l *load) waitProgress(t testing.TB, share float64) {
	t.Helper()
	waitFor(t, 2*time.Minute, fmt.Sprintf("writers at %.0f%%", share*100), func() (bool, string) {
		return l.progress() >= share, fmt.Sprintf("progress %.2f", l.progress())
	})
}

func writeOne(ctx context.Context, c *redis.Client, rng *rand.Rand, spec loadSpec, led *ledger) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	var err error
	if !spec.hot || rng.IntN(3) == 0 {
		err = writeCounter(ctx, c, rng, spec.prefix, led)
	} else {
		err = writeHot(ctx, c, rng, spec.prefix)
	}
	led.outcome(err)
	return err
}

func writeCounter(ctx context.Context, c *redis.Client, rng *rand.Rand, p string, led *ledger) error {
	i := rng.IntN(counterKeys)
	n := int64(rng.IntN(9) + 1)
	switch rng.IntN(4) {
	case 0:
		key := fmt.Sprintf("%s:cnt:%d", p, i)
		err := c.Incr(ctx, key).Err()
		led.count("s|"+key, 1, err)
		return err
	case 1:
		key := fmt.Sprintf("%s:cnt:%d", p, i)
		err := c.IncrBy(ctx, key, n).Err()
		led.count("s|"+key, n, err)
		return err
	case 2:
		key, field := p+":hcnt", fmt.Sprintf("f%d", i)
		err := c.HIncrBy(ctx, key, field, n).Err()
		led.count("h|"+key+"|"+field, n, err)
		return err
	default:
		key, member := p+":zcnt", fmt.Sprintf("m%d", i)
		err := c.ZIncrBy(ctx, key, float64(n), member).Err()
		led.count("z|"+key+"|"+member, n, err)
		return err
	}
}

// writeHot sends one write of the hot keyspace: every write command the
// child supports, on keys that every region writes at once.
func writeHot(ctx context.Context, c *redis.Client, rng *rand.Rand, p string) error {
	k := func(family string) string { return fmt.Sprintf("%s:%s%d", p, family, rng.IntN(hotKeys)) }
	f := fmt.Sprintf("f%d", rng.IntN(hotFields))
	vals := []string{"a", "bb", "ccc", "7", "-3", "x y"}
	v := vals[rng.IntN(len(vals))]
	n := int64(rng.IntN(11) - 5)
	half := float64(rng.IntN(9)-4) / 2 // exact in binary: sums do not depend on order
	ttl := time.Hour + time.Duration(rng.IntN(1000))*time.Second
	switch rng.IntN(30) {
	// strings: last writer wins
	case 0:
		return c.Set(ctx, k("s"), v, 0).Err()
	case 1:
		return c.Set(ctx, k("s"), v, ttl).Err()
	case 2:
		return c.Append(ctx, k("s"), v).Err()
	case 3:
		if rng.IntN(2) == 0 {
			return c.Do(ctx, "GETSET", k("s"), v).Err() // the deprecated command, still supported
		}
		return c.SetArgs(ctx, k("s"), v, redis.SetArgs{Get: true}).Err()
	case 4:
		return c.SetNX(ctx, k("s"), v, 0).Err()
	case 5:
		return c.MSet(ctx, k("s"), v, k("s"), v+v).Err()
	case 6:
		return c.GetDel(ctx, k("s")).Err()
	// counters: increments add up; a SET replaces what it observed
	case 7:
		return c.IncrBy(ctx, k("c"), n).Err()
	case 8:
		return c.DecrBy(ctx, k("c"), n).Err()
	case 9:
		return c.Incr(ctx, k("c")).Err()
	case 10:
		return c.Decr(ctx, k("c")).Err()
	case 11:
		return c.IncrByFloat(ctx, k("c"), half).Err()
	case 12:
		return c.Set(ctx, k("c"), strconv.FormatInt(n*10, 10), 0).Err()
	// hashes: per field LWW or counter; HDEL removes what it observed
	case 13:
		return c.HSet(ctx, k("h"), f, v).Err()
	case 14:
		return c.HSet(ctx, k("h"), f, v, "g"+f, v).Err()
	case 15:
		return c.HDel(ctx, k("h"), f).Err()
	case 16:
		return c.HIncrBy(ctx, k("h"), "n"+f, n).Err()
	case 17:
		return c.HIncrByFloat(ctx, k("h"), "x"+f, half).Err()
	case 18:
		return c.HSetNX(ctx, k("h"), f, v).Err()
	// sets: add wins
	case 19:
		return c.SAdd(ctx, k("t"), f, "m"+v).Err()
	case 20:
		return c.SRem(ctx, k("t"), f).Err()
	// sorted sets: add wins, score LWW, ZINCRBY adds up
	case 21:
		return c.ZAdd(ctx, k("z"), redis.Z{Score: float64(n), Member: f}).Err()
	case 22:
		return c.ZIncrBy(ctx, k("z"), float64(n), f).Err()
	case 23:
		return c.ZRem(ctx, k("z"), f).Err()
	// expiry: the longest TTL wins, PERSIST beats any TTL
	case 24:
		return c.Expire(ctx, k([]string{"s", "h", "t", "z"}[rng.IntN(4)]), ttl).Err()
	case 25:
		return c.PExpire(ctx, k("s"), ttl).Err()
	case 26:
		return c.Persist(ctx, k([]string{"s", "h"}[rng.IntN(2)])).Err()
	case 27:
		return c.ExpireAt(ctx, k("t"), time.Now().Add(ttl)).Err()
	// deletes remove what they observed
	case 28:
		return c.Del(ctx, k([]string{"s", "c", "h", "t", "z"}[rng.IntN(5)])).Err()
	default:
		return c.Unlink(ctx, k([]string{"s", "c", "h", "t", "z"}[rng.IntN(5)])).Err()
	}
}

// checkCounters reads every counter of the ledger in every region and
// fails the test unless each shows the acknowledged total (plus, for a
// counter with uncertain increments, at most those).
func (top *topology) checkCounters(t testing.TB, l *ledger) {
	t.Helper()
	ctx := t.Context()
	l.mu.Lock()
	defer l.mu.Unlock()
	ids := map[string]bool{}
	for id := range l.acked {
		ids[id] = true
	}
	for id := range l.uncertain {
		ids[id] = true
	}
	if len(ids) == 0 {
		t.Fatal("checkCounters: the workload wrote no counter")
	}
	exact := 0
	for _, r := range top.regions {
		for id := range ids {
			got, err := readCounter(ctx, r.app, id)
			if err != nil {
				t.Fatalf("%s: read counter %s: %v", r.id, id, err)
			}
			lo, hi := l.acked[id], l.acked[id]+l.uncertain[id]
			if got < lo && l.lossAllowed {
				if r == top.regions[0] {
					l.lost += lo - got
					t.Logf("counter %s = %d: %d acknowledged increments lost", id, got, lo-got)
				}
				continue
			}
			if got < lo || got > hi {
				if lo == hi {
					t.Errorf("%s: counter %s = %d, want %d (the sum of the acknowledged increments)", r.id, id, got, lo)
				} else {
					t.Errorf("%s: counter %s = %d, want %d to %d (acknowledged, plus at most the %d of uncertain increments)", r.id, id, got, lo, hi, hi-lo)
				}
			}
			if lo == hi {
				exact++
			}
		}
	}
	if t.Failed() {
		t.FailNow()
	}
	t.Logf("counters: %d counters equal their totals in %d regions (%d exact checks; uncertain increments: %d counters)",
		len(ids), len(top.regions), exact, len(l.uncertain))
}

func readCounter(ctx context.Context, c *redis.Client, id string) (int64, error) {
	var sub string
	parts := strings.SplitN(id, "|", 3)
	kind, key := parts[0], parts[1]
	if len(parts) == 3 {
		sub = parts[2]
	}
	switch kind {
	case "s":
		v, err := c.Get(ctx, key).Int64()
		if errors.Is(err, redis.Nil) {
			return 0, nil
		}
		return v, err
	case "h":
		v, err := c.HGet(ctx, key, sub).Int64()
		if errors.Is(err, redis.Nil) {
			return 0, nil
		}
		return v, err
	default:
		v, err := c.ZScore(ctx, key, sub).Result()
		if errors.Is(err, redis.Nil) {
			return 0, nil
		}
		if v != float64(int64(v)) {
			return 0, fmt.Errorf("score %v is not a whole number", v)
		}
		return int64(v), err
	}
}
