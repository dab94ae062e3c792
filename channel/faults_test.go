package channel

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/globalreplica/globalreplica/child"
)

// writeCounters writes n increments spread over keys from one region, with
// concurrency and pipelining, recording the totals.
func writeCounters(t *testing.T, c *cluster, r *region, n, workers int, ct *counterTotal) {
	t.Helper()
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var cmds [][]string
			flush := func() {
				_, errs := r.engine.WritePipeline(context.Background(), cmds)
				for i, err := range errs {
					if err != nil {
						t.Errorf("%s %v: %v", r.name, cmds[i], err)
						continue
					}
					d, _ := strconv.ParseInt(cmds[i][2], 10, 64)
					ct.add(cmds[i][1], d)
				}
				cmds = cmds[:0]
				if r.node != nil {
					r.node.Shipper().Notify()
				}
			}
			for i := 0; i < n/workers; i++ {
				cmds = append(cmds, []string{"incrby", fmt.Sprintf("ctr%d", (w+i)%8), strconv.Itoa(i%5 + 1)})
				if len(cmds) == 100 {
					flush()
				}
			}
			if len(cmds) > 0 {
				flush()
			}
		}()
	}
	wg.Wait()
}

// TestIsolatedRegionResumes: a region cut off while 200,000 ops accumulate
// in the others resumes from its applied vector (no full resync: it applies
// exactly the ops it missed) and converges; counters count every increment
// exactly once.
func TestIsolatedRegionResumes(t *testing.T) {
	c := newCluster(t, "sgp", "fra", "iad")
	c.startAll()
	ct := &counterTotal{m: map[string]int64{}}
	for _, r := range c.regions {
		writeCounters(t, c, r, 300, 3, ct)
	}
	c.waitConverged(30 * time.Second)
	iad := c.region("iad")
	before, _ := iad.engine.Position(context.Background())
	c.stop(iad) // cut off: no shipping, no receiving
	t0 := time.Now()
	writeCounters(t, c, c.region("sgp"), 100_000, 8, ct)
	writeCounters(t, c, c.region("fra"), 100_000, 8, ct)
	writeCounters(t, c, iad, 1_000, 2, ct) // it keeps serving its own clients
	t.Logf("wrote 201,000 ops in %v", time.Since(t0).Round(time.Millisecond))
	t0 = time.Now()
	c.start(iad)
	c.waitConverged(5 * time.Minute)
	t.Logf("iad caught up with 200,000+ ops in %v", time.Since(t0).Round(time.Millisecond))
	checkCounters(t, c, ct)
	var applied, fast uint64
	for _, st := range iad.node.Status() {
		applied += st.AppliedOps
		fast += st.FastOps
	}
	// Increments of one region's counters merge without conflict: most take
	// the engine's fast path (merged in Go, compare-and-set in Redis), and
	// checkCounters above counted every one exactly once.
	if fast == 0 || fast > applied {
		t.Fatalf("iad applied %d ops, %d of them by the fast path", applied, fast)
	}
	t.Logf("iad applied %d ops, %d by the fast path", applied, fast)
	after, _ := iad.engine.Position(context.Background())
	missed := (after.Applied["sgp"] - before.Applied["sgp"]) + (after.Applied["fra"] - before.Applied["fra"])
	if missed < 200_000 || applied != missed {
		t.Fatalf("iad applied %d ops after rejoining, missed %d: want exactly the missed ops (>= 200000)", applied, missed)
	}
}

// crashyEngine fails on purpose at the worst moments.
type crashyEngine struct {
	Engine
	applyThenFail atomic.Int32 // apply, then report failure before the ack
	trimFail      atomic.Int32 // publish, then fail before the trim
}

func (e *crashyEngine) NewApplyChain(origin string) child.Chain {
	return &crashyChain{Chain: e.Engine.NewApplyChain(origin), e: e}
}

// crashyChain is the chain of a crashyEngine's receiver.
type crashyChain struct {
	child.Chain
	e *crashyEngine
}

func (c *crashyChain) Commit(ctx context.Context, p *child.Prepared) (child.ApplyResult, error) {
	res, err := c.Chain.Commit(ctx, p)
	if err == nil && c.e.applyThenFail.Add(-1) >= 0 {
		return res, errors.New("injected crash between apply and ack")
	}
	return res, err
}

func (e *crashyEngine) TrimLog(ctx context.Context, upTo uint64) (int64, error) {
	if e.trimFail.Add(-1) >= 0 {
		return 0, errors.New("injected crash between publish and trim")
	}
	return e.Engine.TrimLog(ctx, upTo)
}

// TestCrashesLoseNothing: a receiver that dies between applying a batch and
// acknowledging it, and a shipper that dies between publishing and trimming
// the op log, lose nothing and count nothing twice.
func TestCrashesLoseNothing(t *testing.T) {
	c := newCluster(t, "sgp", "fra")
	crashy := map[string]*crashyEngine{}
	for _, r := range c.regions {
		r.wrap = func(e Engine) Engine {
			ce := &crashyEngine{Engine: e}
			ce.applyThenFail.Store(5)
			ce.trimFail.Store(5)
			crashy[r.name] = ce
			return ce
		}
	}
	c.startAll()
	ct := &counterTotal{m: map[string]int64{}}
	pending := func() bool {
		for _, ce := range crashy {
			if ce.applyThenFail.Load() >= 0 || ce.trimFail.Load() >= 0 {
				return true
			}
		}
		return false
	}
	// keep traffic flowing until every injected crash happened (bounded)
	for round := 0; round < 30 && (round < 3 || pending()); round++ {
		for _, r := range c.regions {
			writeCounters(t, c, r, 500, 4, ct)
		}
		time.Sleep(200 * time.Millisecond)
	}
	c.waitConverged(60 * time.Second)
	checkCounters(t, c, ct)
	for name, ce := range crashy {
		if ce.applyThenFail.Load() >= 0 || ce.trimFail.Load() >= 0 {
			t.Fatalf("%s: the injected crashes did not all happen (apply left %d, trim left %d)", name, ce.applyThenFail.Load(), ce.trimFail.Load())
		}
	}
	for _, r := range c.regions {
		ops := c.streamOps(r) // checks stream seq == op seq and msg ids
		p, _ := r.engine.Position(context.Background())
		if uint64(len(ops)) != p.Seq {
			t.Fatalf("%s: stream holds %d ops, the region issued %d", r.name, len(ops), p.Seq)
		}
		if n, _ := r.engine.LogLen(context.Background()); n != 0 {
			t.Fatalf("%s: %d ops left in the op log", r.name, n)
		}
	}
}

// TestRetentionExceededNeedsRebuild: a region away while its peer's stream
// drops ops it needs stops that channel in needs-rebuild instead of
// skipping them.
func TestRetentionExceededNeedsRebuild(t *testing.T) {
	c := newCluster(t, "sgp", "fra")
	sgp, fra := c.region("sgp"), c.region("fra")
	sgp.stream.MaxBytes = 64 << 10 // small: old ops are discarded
	c.startAll()
	for i := 0; i < 50; i++ {
		c.write(sgp, "set", fmt.Sprintf("k%d", i), "v", "0", "0", "0", "0", "", "0")
	}
	c.waitConverged(30 * time.Second)
	c.stop(fra)
	for i := 0; i < 3000; i++ {
		c.write(sgp, "set", fmt.Sprintf("k%d", i%100), fmt.Sprintf("value-%d", i), "0", "0", "0", "0", "", "0")
	}
	waitFor(t, 30*time.Second, "sgp shipped everything", func() bool {
		n, _ := sgp.engine.LogLen(context.Background())
		return n == 0
	})
	c.start(fra)
	waitFor(t, 30*time.Second, "the channel sgp->fra reports needs-rebuild", func() bool {
		r, _ := fra.node.Receiver("sgp")
		return r.Status().State == StateNeedsRebuild
	})
	r, _ := fra.node.Receiver("sgp")
	st := r.Status()
	if st.LastError == "" {
		t.Fatal("needs-rebuild without an error message")
	}
	if v := gaugeValue(t, fra.metrics, map[string]string{"origin": "sgp", "dest": "fra", "state": StateNeedsRebuild}); v != 1 {
		t.Fatalf("metric gr_channel_state{state=needs-rebuild} = %v", v)
	}
	p, _ := fra.engine.Position(context.Background())
	if p.Applied["sgp"] != 50 {
		t.Fatalf("fra applied sgp up to %d: it must stop at 50, not skip ahead", p.Applied["sgp"])
	}
}

// TestPauseResumeThrottle: a paused channel applies nothing, resuming
// catches up, and a throttled channel applies within 10% of its limit.
func TestPauseResumeThrottle(t *testing.T) {
	c := newCluster(t, "sgp", "fra")
	c.startAll()
	sgp, fra := c.region("sgp"), c.region("fra")
	recv, _ := fra.node.Receiver("sgp")
	recv.Pause()
	waitFor(t, 10*time.Second, "paused", func() bool { return recv.Status().State == StatePaused })
	ct := &counterTotal{m: map[string]int64{}}
	writeCounters(t, c, sgp, 2000, 4, ct)
	time.Sleep(300 * time.Millisecond)
	if p, _ := fra.engine.Position(context.Background()); p.Applied["sgp"] != 0 {
		t.Fatalf("a paused channel applied %d ops", p.Applied["sgp"])
	}
	recv.Resume()
	c.waitConverged(30 * time.Second)
	checkCounters(t, c, ct)

	// throttle: a backlog of ops applied at a fixed rate
	const limit = 2000.0
	recv.Pause()
	writeCounters(t, c, sgp, 16000, 8, ct)
	waitFor(t, 30*time.Second, "shipped", func() bool {
		n, _ := sgp.engine.LogLen(context.Background())
		return n == 0
	})
	recv.SetThrottle(limit, 0)
	recv.Resume()
	time.Sleep(time.Second) // let the channel reach its pace
	p0, _ := fra.engine.Position(context.Background())
	t0 := time.Now()
	time.Sleep(5 * time.Second)
	p1, _ := fra.engine.Position(context.Background())
	rate := float64(p1.Applied["sgp"]-p0.Applied["sgp"]) / time.Since(t0).Seconds()
	if rate < 0.9*limit || rate > 1.1*limit {
		t.Fatalf("throttled to %v ops/s, measured %.0f ops/s over 5 s", limit, rate)
	}
	t.Logf("throttle %v ops/s: measured %.0f ops/s", limit, rate)
	recv.SetThrottle(0, 0)
	c.waitConverged(60 * time.Second)
	checkCounters(t, c, ct)
}

func waitFor(t *testing.T, timeout time.Duration, what string, ok func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestOriginNATSRestart: the origin's NATS server goes away and comes back
// (same storage) while both regions keep writing; the channels reconnect,
// resume from the applied vector and converge with every increment counted
// once.
func TestOriginNATSRestart(t *testing.T) {
	c := newCluster(t, "sgp", "fra")
	c.startAll()
	ct := &counterTotal{m: map[string]int64{}}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, r := range c.regions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < 40; i++ {
				select {
				case <-stop:
					return
				default:
				}
				writeCounters(t, c, r, 100, 2, ct)
				time.Sleep(20 * time.Millisecond)
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	c.region("sgp").nats.Restart()
	time.Sleep(300 * time.Millisecond)
	c.region("fra").nats.Restart()
	wg.Wait()
	close(stop)
	c.waitConverged(60 * time.Second)
	checkCounters(t, c, ct)
	for _, r := range c.regions {
		c.streamOps(r) // stream sequence == op sequence, no duplicates after the restarts
	}
}
