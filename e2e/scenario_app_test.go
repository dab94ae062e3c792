package e2e

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/globalreplica/globalreplica/e2e/harness"
	"github.com/globalreplica/globalreplica/regional"
)

// Scenario 8 (issue 7): a region's network cut while an application using
// the failover-aware client (package regional) keeps writing.
//
// The application prefers iad, then sgp, then fra. The test process reaches
// every child through its published ports, which go through the region
// network, so cutting iad's WAN link does not cut the application's path to
// iad's child: PING keeps passing and writes to iad keep succeeding. What
// moves the client is the availability check with StrictLag (and a MaxLag,
// which StrictLag needs): iad's child, cut off from the WAN, cannot measure
// its inbound channels against the other regions' streams, and strict
// counts an unmeasurable channel as lagging, so iad answers 503 ("lag
// unknown (strict)").
//
// The cut is of iad's child only (its NATS stays on the WAN). Cutting the
// region's NATS as well, as scenario 2 does, makes every region unavailable
// to a strict client: sgp and fra cannot measure their channel from iad
// either, and strict counts that too, so the client would be left with no
// region (ErrNoRegion) rather than move. Without strict the cut region
// stays available (an unmeasurable channel is not counted), and the client
// would never move. Cutting the child alone is the cut for which a client
// can tell the cut-off region from the others: iad hears from no one, while
// sgp and fra still read iad's stream (its NATS is reachable) and stay
// within MaxLag.
//
// Timeline: the client starts on iad and writes (SETs of unique keys and
// counter increments, booked in the ledger) while sgp and fra run a light
// load (so that iad's inbound channels carry ops during the cut); iad's
// child is cut from the WAN; the client must fail over to sgp within
// appFailoverWindow and write there; the cut heals; iad catches up, and
// the client must fail back to iad no sooner than HoldTime after the heal;
// the writes go on for a moment on iad, then the usual checks, plus every
// key the client was told it set present with its value in every region.

func init() {
	register(scenario{num: 8, name: "app-failover", run: scenarioAppFailover})
}

const (
	appProbeInterval = 200 * time.Millisecond
	appHoldTime      = 3 * time.Second
	// appMaxLag: well above the replication delay under the suite's load,
	// so that sgp and fra never count as lagging; below the cut's length,
	// so that iad counts as lagging right after the heal until it caught up.
	appMaxLag = 2 * time.Second
	// appFailoverWindow bounds the time from the cut to the failover
	// (expected: FailureThreshold probes, about a second).
	appFailoverWindow = 10 * time.Second
	// appFailbackWindow bounds the time from the heal to the fail-back
	// (catch-up, then HoldTime).
	appFailbackWindow = 60 * time.Second
	// appOnSGP: the client writes this long on sgp before the heal.
	appOnSGP = 2 * time.Second
)

func scenarioAppFailover(t *testing.T, top *topology) outcome {
	iad := top.byID["iad"]
	before := top.mustSnapshot(t)
	led := newLedger()

	events := &eventLog{}
	client, err := regional.New(t.Context(), regional.Config{
		Regions: []regional.Region{
			top.appRegion("iad"), top.appRegion("sgp"), top.appRegion("fra"),
		},
		Options: &redis.Options{
			DialTimeout: 500 * time.Millisecond, ReadTimeout: 2 * time.Second, WriteTimeout: 2 * time.Second,
			DialerRetries: 1,
			// No retry: go-redis retries a command whose connection failed
			// after it was written (EOF), and a retried INCRBY would count
			// twice. The ledger counts a network error as uncertain.
			MaxRetries: -1,
			PoolSize:   4,
		},
		MaxLag:           appMaxLag,
		StrictLag:        true,
		FailureThreshold: 2,
		ProbeInterval:    appProbeInterval,
		HoldTime:         appHoldTime,
		OnEvent: func(e regional.Event) {
			events.add(e)
			t.Logf("client event: %s", e)
		},
	})
	if err != nil {
		t.Fatalf("regional.New: %v", err)
	}
	defer func() { _ = client.Close() }()
	if a := client.Active(); a != "iad" {
		t.Fatalf("the client started on %q, want iad (its first choice, healthy): %+v", a, client.Status())
	}
	// Count the writes each region acknowledged, by a hook on each
	// region's own client (the routed commands run there).
	perRegion := map[string]*atomic.Int64{}
	for _, id := range []string{"iad", "sgp", "fra"} {
		n := &atomic.Int64{}
		perRegion[id] = n
		rc, ok := client.RegionClient(id)
		if !ok {
			t.Fatalf("RegionClient(%q): not configured", id)
		}
		rc.AddHook(writeCounterHook{n})
	}

	bg := top.startLoad(t.Context(), loadSpec{prefix: "s8bg", regions: []string{"sgp", "fra"}, workers: 1, ops: 400,
		pause: 15 * time.Millisecond, seed: 8, ledger: led})
	w := startAppWriter(t.Context(), client, led)
	defer w.stop()
	w.waitAcked(t, 100)

	// Cut iad's child from the WAN; the region network (iad's Redis, its
	// NATS, the test's published ports) stays.
	childIP := iad.child.IP(top.wan)
	iad.child.Disconnect(top.wan)
	cutAt := time.Now()
	fo := events.wait(t, appFailoverWindow, "failover iad -> sgp", func(e regional.Event) bool {
		return e.Kind == regional.Failover && e.From == "iad"
	})
	if fo.At.Before(cutAt) {
		t.Fatalf("the client left iad before the cut: %s; events:\n%s", fo, events)
	}
	if fo.To != "sgp" {
		t.Fatalf("the client failed over from iad to %q, want sgp (the next in order, not cut): %s", fo.To, fo)
	}
	if !strings.Contains(fo.Reason, "lag unknown (strict)") {
		t.Fatalf("the failover's reason is not iad's unmeasurable inbound channels: %s", fo)
	}
	movedAfter := fo.At.Sub(cutAt)
	onSGP := perRegion["sgp"].Load()
	// Writes go on in sgp.
	time.Sleep(appOnSGP)
	if a := client.Active(); a != "sgp" {
		t.Fatalf("during the cut the client is on %q, want sgp; events:\n%s", a, events)
	}
	if n := perRegion["sgp"].Load() - onSGP; n < 10 {
		t.Fatalf("only %d writes acknowledged by sgp in the %s after the failover", n, appOnSGP)
	}
	// The cut is real: iad applied nothing of what sgp issued meanwhile.
	during := top.mustSnapshot(t)
	if got := during["iad"].applied["sgp"]; got >= during["sgp"].seq {
		t.Fatalf("iad applied sgp up to %d during the cut, all sgp issued: the cut did not cut", got)
	}

	iad.child.Connect(top.wan)
	healed := time.Now()
	if ip := iad.child.IP(top.wan); ip != childIP {
		t.Fatalf("iad's child's WAN address changed across the cut: %s → %s", childIP, ip)
	}
	fb := events.wait(t, appFailbackWindow, "failback sgp -> iad", func(e regional.Event) bool {
		return e.Kind == regional.Failback && e.To == "iad"
	})
	backAfter := fb.At.Sub(healed)
	if fb.From != "sgp" {
		t.Fatalf("the client failed back to iad from %q, want sgp: %s", fb.From, fb)
	}
	if backAfter < appHoldTime {
		t.Fatalf("the client failed back %s after the heal, before the hold time %s", backAfter, appHoldTime)
	}
	onIAD := perRegion["iad"].Load()
	waitFor(t, 30*time.Second, "writes acknowledged by iad after the fail-back", func() (bool, string) {
		n := perRegion["iad"].Load() - onIAD
		return n >= 50, fmt.Sprintf("%d writes", n)
	})
	w.stop()
	bg.wait()
	end := time.Now()

	if err := w.err(); err != nil {
		t.Fatalf("application writer: %v", err)
	}
	if n := perRegion["fra"].Load(); n != 0 {
		t.Fatalf("%d writes went to fra: the client left sgp, which was never cut; events:\n%s", n, events)
	}
	for _, e := range events.all() {
		if e.Kind == regional.NoRegion || (e.Kind == regional.RegionDown && e.Region != "iad") {
			t.Fatalf("unexpected client event %s; events:\n%s", e, events)
		}
	}
	o := top.finish(t, before, bg, end)
	top.checkAppKeys(t, w.ackedKeys())
	o.note = strings.TrimPrefix(o.note+fmt.Sprintf(
		"; client iad→sgp %s after the cut, back to iad %s after the heal (hold %s); WAN cut for %s; app writes acknowledged: iad %d, sgp %d, fra %d (%d network errors)",
		movedAfter.Round(time.Millisecond), backAfter.Round(time.Millisecond), appHoldTime, healed.Sub(cutAt).Round(100*time.Millisecond),
		perRegion["iad"].Load(), perRegion["sgp"].Load(), perRegion["fra"].Load(), w.netErrs.Load()), "; ")
	return o
}

// appRegion is a region as the application reaches it: the child's
// published RESP and HTTP ports.
func (top *topology) appRegion(id string) regional.Region {
	c := top.byID[id].child
	return regional.Region{Name: id, Addr: c.Addr(), HTTP: c.MappedAddr(harness.ChildHTTPPort)}
}

// writeCounterHook counts the write commands a region's client got a
// reply for without error (the probes' PINGs are not counted).
type writeCounterHook struct{ n *atomic.Int64 }

func (h writeCounterHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h writeCounterHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		if err == nil && cmd.Name() != "ping" {
			h.n.Add(1)
		}
		return err
	}
}

func (h writeCounterHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return next
}

// eventLog keeps the client's events.
type eventLog struct {
	mu  sync.Mutex
	evs []regional.Event
}

func (l *eventLog) add(e regional.Event) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.evs = append(l.evs, e)
}

func (l *eventLog) all() []regional.Event {
	l.mu.Lock()
	defer l.mu.Unlock()
	return slices.Clone(l.evs)
}

func (l *eventLog) String() string {
	var b strings.Builder
	for _, e := range l.all() {
		fmt.Fprintf(&b, "  %s %s\n", e.At.Format("15:04:05.000"), e)
	}
	return b.String()
}

// wait waits up to d for an event that match accepts and returns the first.
func (l *eventLog) wait(t testing.TB, d time.Duration, what string, match func(regional.Event) bool) regional.Event {
	t.Helper()
	var found regional.Event
	waitFor(t, d, what, func() (bool, string) {
		for _, e := range l.all() {
			if match(e) {
				found = e
				return true, ""
			}
		}
		return false, "events so far:\n" + l.String()
	})
	return found
}

// appWriter is the application: one goroutine writing through the
// regional client until stopped (at most appMaxOps commands or
// appMaxTime), alternating a SET of a unique key and a counter increment.
// It never retries.
type appWriter struct {
	cancel  context.CancelFunc
	done    chan struct{}
	mu      sync.Mutex
	acked   []int // numbers of the unique keys acknowledged
	firstEr error // a failure that is not a network error
	netErrs atomic.Int64
	nacked  atomic.Int64
}

const (
	appMaxOps  = 20000
	appMaxTime = 2 * time.Minute
)

func appKey(n int) string { return fmt.Sprintf("s8:app:u:%d", n) }

func appValue(n int) string { return fmt.Sprintf("v%d", n) }

func startAppWriter(ctx context.Context, c *regional.Client, led *ledger) *appWriter {
	ctx, cancel := context.WithTimeout(ctx, appMaxTime)
	w := &appWriter{cancel: cancel, done: make(chan struct{})}
	rng := rand.New(rand.NewPCG(8, 8))
	go func() {
		defer close(w.done)
		for i := range appMaxOps {
			if ctx.Err() != nil {
				return
			}
			cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
			var err error
			if i%2 == 0 {
				err = c.Set(cctx, appKey(i), appValue(i), 0).Err()
				if err == nil {
					w.mu.Lock()
					w.acked = append(w.acked, i)
					w.mu.Unlock()
				}
			} else {
				key, n := fmt.Sprintf("s8:app:cnt:%d", rng.IntN(counterKeys)), int64(rng.IntN(9)+1)
				err = c.IncrBy(cctx, key, n).Err()
				led.count("s|"+key, n, err)
			}
			ccancel()
			if ctx.Err() != nil {
				return // stopped: the last command's outcome is booked, not judged
			}
			led.outcome(err)
			switch {
			case err == nil:
				w.nacked.Add(1)
			case isNetErr(err) && !errors.Is(err, regional.ErrNoRegion):
				w.netErrs.Add(1)
				time.Sleep(50 * time.Millisecond)
			default:
				w.mu.Lock()
				if w.firstEr == nil {
					w.firstEr = fmt.Errorf("command %d: %w", i, err)
				}
				w.mu.Unlock()
				time.Sleep(50 * time.Millisecond)
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	return w
}

func (w *appWriter) stop() {
	w.cancel()
	<-w.done
}

func (w *appWriter) err() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.firstEr
}

func (w *appWriter) ackedKeys() []int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.acked)
}

// waitAcked waits until the application had n writes acknowledged.
func (w *appWriter) waitAcked(t testing.TB, n int64) {
	t.Helper()
	waitFor(t, time.Minute, fmt.Sprintf("%d application writes acknowledged", n), func() (bool, string) {
		return w.nacked.Load() >= n, fmt.Sprintf("%d acknowledged, first error %v", w.nacked.Load(), w.err())
	})
}

// checkAppKeys checks that every key the application was told it set holds
// its value in every region.
func (top *topology) checkAppKeys(t testing.TB, acked []int) {
	t.Helper()
	if len(acked) == 0 {
		t.Fatal("the application had no SET acknowledged")
	}
	for _, r := range top.regions {
		for chunk := range slices.Chunk(acked, 500) {
			keys := make([]string, len(chunk))
			for i, n := range chunk {
				keys[i] = appKey(n)
			}
			vals, err := r.app.MGet(t.Context(), keys...).Result()
			if err != nil {
				t.Fatalf("%s: MGET: %v", r.id, err)
			}
			for i, v := range vals {
				if s, _ := v.(string); s != appValue(chunk[i]) {
					t.Fatalf("%s: %s = %v, want %q (the client was told the SET succeeded)", r.id, keys[i], v, appValue(chunk[i]))
				}
			}
		}
	}
	t.Logf("application keys: %d acknowledged SETs present in %d regions", len(acked), len(top.regions))
}
