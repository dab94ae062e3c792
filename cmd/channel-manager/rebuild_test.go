package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/globalreplica/globalreplica/channel"
	"github.com/globalreplica/globalreplica/crdt"
	"github.com/globalreplica/globalreplica/internal/daemon"
	"github.com/globalreplica/globalreplica/internal/testnats"
	"github.com/globalreplica/globalreplica/manager"
)

// addRegion adds a running child's region through the CLI.
func (c *cli) addRegion(r *region) {
	c.t.Helper()
	c.ok("region", "add", r.name, "--region-nats", r.nats.URL(), "--redis", r.d.Engine.Redis().Options().Addr)
}

// rebuild runs a rebuild with --json and returns its result and stderr
// (the progress bars).
func (c *cli) rebuild(args ...string) (rebuildView, string) {
	c.t.Helper()
	var v rebuildView
	out, errOut, code := c.run(append(append([]string{"rebuild"}, args...), "--json", "--timeout", "60s")...)
	if code != exitOK {
		c.t.Fatalf("rebuild %v: exit %d\nstdout: %s\nstderr: %s", args, code, out, errOut)
	}
	if err := strictJSON(out, &v); err != nil {
		c.t.Fatalf("rebuild %v --json: %v\n%s", args, err, out)
	}
	return v, errOut
}

// converged waits until verify passes and every channel runs.
func (c *cli) converged(channels int) {
	c.t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		_, _, code := c.run("verify")
		var sts []manager.ChannelStatus
		out, _, scode := c.run("channel", "status", "--json")
		running := 0
		if scode == exitOK && strictJSON(out, &sts) == nil {
			for _, s := range sts {
				if s.State == channel.StateRunning {
					running++
				}
			}
		}
		if code == exitOK && running == channels {
			return
		}
		if time.Now().After(deadline) {
			vout, _, _ := c.run("verify")
			c.t.Fatalf("not converged: verify exit %d, %d of %d channels running\n%s\n%s", code, running, channels, vout, out)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// checkStreamOpIDs reads a region's whole stream and fails unless message
// i holds the op with OpID region:i (no OpID issued twice, none skipped).
func checkStreamOpIDs(t *testing.T, r *region) uint64 {
	t.Helper()
	ctx := context.Background()
	_, js := r.nats.Connect()
	st, err := js.Stream(ctx, channel.StreamName("shop", r.name))
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	last := info.State.LastSeq
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{DeliverPolicy: jetstream.DeliverAllPolicy})
	if err != nil {
		t.Fatal(err)
	}
	for seq := info.State.FirstSeq; seq <= last; {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			t.Fatal(err)
		}
		n := 0
		for msg := range batch.Messages() {
			md, _ := msg.Metadata()
			op, err := crdt.UnmarshalOp(msg.Data())
			if err != nil {
				t.Fatal(err)
			}
			if op.ID.Region != r.name || op.ID.Seq != md.Sequence.Stream {
				t.Fatalf("stream of %s: message %d holds op %v", r.name, md.Sequence.Stream, op.ID)
			}
			seq = md.Sequence.Stream + 1
			n++
		}
		if n == 0 {
			t.Fatalf("stream of %s stalled at %d of %d", r.name, seq, last)
		}
	}
	return last
}

// TestRebuildNeedsRebuildRegions: two regions miss ops of sgp that aged
// out of sgp's small stream while their channels were paused (state
// needs-rebuild). A rebuild from a region that is itself behind is refused
// and changes nothing; iad is rebuilt from sgp, then fra, evicted
// meanwhile, from iad (which readmits it). Progress bars show keys and ops;
// afterwards every channel runs and verify passes.
func TestRebuildNeedsRebuildRegions(t *testing.T) {
	c, mgr := newCLI(t)
	ctx := context.Background()
	c.ok("instance", "create")
	sgp := startChildWith(t, mgr, "sgp", func(cfg *daemon.Config) { cfg.StreamBytes = 64 << 10 })
	fra, iad := startChild(t, mgr, "fra"), startChild(t, mgr, "iad")
	for _, r := range []*region{sgp, fra, iad} {
		c.addRegion(r)
	}
	// state of every kind, tombstones included, from every region
	for i := range 50 {
		k := fmt.Sprintf("k%d", i)
		must(t, fra.c.HSet(ctx, "h", k, i).Err())
		must(t, iad.c.SAdd(ctx, "s", k).Err())
		must(t, sgp.c.IncrBy(ctx, "n", 1).Err())
		must(t, fra.c.IncrBy(ctx, "n", 1).Err())
		must(t, iad.c.Set(ctx, k, "v", 0).Err())
	}
	must(t, iad.c.Del(ctx, "k1", "k2").Err())
	must(t, fra.c.HDel(ctx, "h", "k3").Err())
	waitGet(t, sgp.c, "n", "100")
	c.ok("channel", "pause", "sgp", "fra")
	c.ok("channel", "pause", "sgp", "iad")
	eventually(t, "both channels from sgp paused", func() bool {
		return c.status("sgp", "fra").State == channel.StatePaused && c.status("sgp", "iad").State == channel.StatePaused
	})
	// > 64 KB of sgp's ops: the oldest that fra and iad need age out
	pipe := sgp.c.Pipeline()
	for i := range 600 {
		pipe.Set(ctx, fmt.Sprintf("big%d", i), strings.Repeat("x", 200), 0)
	}
	_, err := pipe.Exec(ctx)
	must(t, err)
	must(t, sgp.c.IncrBy(ctx, "n", 1000).Err())
	// a hash of 50,000 fields: its copy is larger than an export chunk
	for i := 0; i < 50000; i += 1000 {
		var fields []any
		for j := i; j < i+1000; j++ {
			fields = append(fields, fmt.Sprintf("field-%d", j), j)
		}
		pipe.HSet(ctx, "bighash", fields...)
	}
	_, err = pipe.Exec(ctx)
	must(t, err)
	c.ok("channel", "resume", "sgp", "fra")
	c.ok("channel", "resume", "sgp", "iad")
	eventually(t, "both channels from sgp in needs-rebuild", func() bool {
		return c.status("sgp", "fra").State == channel.StateNeedsRebuild && c.status("sgp", "iad").State == channel.StateNeedsRebuild
	})

	// iad is behind on sgp too: refused, nothing changed
	s, err := manager.Bind(ctx, mustJS(t, mgr), "shop")
	must(t, err)
	before, err := s.Load(ctx)
	must(t, err)
	c.fails(exitFailure, "peer is itself behind", "rebuild", "fra", "--from", "iad")
	after, err := s.Load(ctx)
	must(t, err)
	if after.Revision != before.Revision {
		t.Fatalf("a refused rebuild changed the desired state: revision %d -> %d", before.Revision, after.Revision)
	}

	v, progress := c.rebuild("iad", "--from", "sgp")
	if v.Phase != manager.RebuildDone || v.Region != "iad" || v.From != "sgp" || v.KeysCopied < 600 || v.Position["sgp"] == 0 || v.Readmitted {
		t.Fatalf("rebuild iad = %+v", v)
	}
	t.Logf("rebuild iad: %+v\n%s", v, progress)
	if !strings.Contains(progress, "iad: keys copied") || !strings.Contains(progress, "iad: ops replayed") {
		t.Fatalf("no progress bars on stderr:\n%s", progress)
	}
	if got, _ := iad.c.Get(ctx, "big599").Result(); len(got) != 200 {
		t.Fatalf("iad after the rebuild: big599 = %q", got)
	}

	// fra stays away: evicted, then it comes back through a rebuild
	c.ok("region", "evict", "fra")
	c.fails(exitFailure, "is evicted", "rebuild", "iad", "--from", "fra")
	v, _ = c.rebuild("fra", "--from", "iad", "--quiet")
	if v.Phase != manager.RebuildDone || !v.Readmitted || len(v.ChannelsCreated) != 4 {
		t.Fatalf("rebuild fra = %+v", v)
	}
	var regions []regionView
	c.json(&regions, "region", "list")
	for _, r := range regions {
		if r.Evicted {
			t.Fatalf("still evicted after the rebuild: %+v", r)
		}
	}
	c.converged(6)
	for _, r := range []*region{sgp, fra, iad} {
		waitGet(t, r.c, "n", "1100")
		if n, _ := r.c.HLen(ctx, "bighash").Result(); n != 50000 {
			t.Fatalf("%s: bighash has %d fields", r.name, n)
		}
		if n, _ := r.c.HLen(ctx, "h").Result(); n != 49 {
			t.Fatalf("%s: h has %d fields", r.name, n)
		}
		if n, _ := r.c.Exists(ctx, "k1", "k2", "k3").Result(); n != 1 {
			t.Fatalf("%s: %d of k1 k2 k3 exist", r.name, n)
		}
	}
	// writes flow again everywhere
	must(t, fra.c.IncrBy(ctx, "n", 1).Err())
	for _, r := range []*region{sgp, iad} {
		waitGet(t, r.c, "n", "1101")
	}
}

// TestRebuildWipedRegionUnderLoad: fra's Redis is wiped while sgp and iad
// keep incrementing a counter; fra is rebuilt from sgp during the load.
// Every acknowledged increment is counted exactly once in every region,
// the regions converge, and fra's sequence continues past its stream (its
// stream holds op fra:i at message i, every i).
func TestRebuildWipedRegionUnderLoad(t *testing.T) {
	c, mgr := newCLI(t)
	ctx := context.Background()
	c.ok("instance", "create")
	sgp, fra, iad := startChild(t, mgr, "sgp"), startChild(t, mgr, "fra"), startChild(t, mgr, "iad")
	for _, r := range []*region{sgp, fra, iad} {
		c.addRegion(r)
	}
	var acked atomic.Int64
	for i := range 100 {
		must(t, fra.c.IncrBy(ctx, "n", 1).Err())
		must(t, fra.c.Set(ctx, fmt.Sprintf("f%d", i), "x", 0).Err())
	}
	acked.Add(100)
	// Every op of fra shipped and applied before the wipe. (A wipe while
	// the shipper has a publish in flight can lose ops: the wipe recovery
	// and the shipper's trim race with it; that is not the rebuild's
	// concern and not what this test is about.)
	eventually(t, "sgp and iad applied all of fra's ops", func() bool {
		p1, _ := sgp.d.Engine.Position(ctx)
		p2, _ := iad.d.Engine.Position(ctx)
		return p1.Applied["fra"] == 200 && p2.Applied["fra"] == 200
	})

	// bounded load: at most 1500 increments per writer, for at most 30 s
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for _, r := range []*region{sgp, iad} {
		wg.Add(1)
		go func(cl *redis.Client) {
			defer wg.Done()
			deadline := time.Now().Add(30 * time.Second)
			for i := 0; i < 1500 && time.Now().Before(deadline); i++ {
				select {
				case <-stop:
					return
				default:
				}
				if cl.IncrBy(ctx, "n", 1).Err() == nil {
					acked.Add(1)
				}
				time.Sleep(2 * time.Millisecond)
			}
		}(r.c)
	}
	time.Sleep(300 * time.Millisecond)
	raw := redis.NewClient(&redis.Options{Addr: fra.d.Engine.Redis().Options().Addr})
	defer func() { _ = raw.Close() }()
	must(t, raw.FlushAll(ctx).Err())
	// fra itself, from the wipe on (a write acknowledged by the wiped Redis
	// before the wipe may be lost with it: no Redis survived to keep it),
	// refuses writes with TRYAGAIN while it recovers and while it is rebuilt
	var refused atomic.Int64
	var badErr atomic.Value
	// no retries: go-redis retries TRYAGAIN by itself
	fraW := redis.NewClient(&redis.Options{Addr: fra.d.RESPAddr(), MaxRetries: -1})
	defer func() { _ = fraW.Close() }()
	wg.Add(1)
	go func() {
		defer wg.Done()
		deadline := time.Now().Add(30 * time.Second)
		for i := 0; i < 3000 && time.Now().Before(deadline); i++ {
			select {
			case <-stop:
				return
			default:
			}
			err := fraW.IncrBy(ctx, "n", 1).Err()
			switch {
			case err == nil:
				acked.Add(1)
			case strings.HasPrefix(err.Error(), "TRYAGAIN"):
				refused.Add(1)
			default:
				badErr.Store(err.Error())
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	v, _ := c.rebuild("fra", "--from", "sgp")
	close(stop)
	wg.Wait()
	if v.Phase != manager.RebuildDone || v.KeysCopied < 100 {
		t.Fatalf("rebuild fra = %+v", v)
	}
	if e := badErr.Load(); e != nil {
		t.Fatalf("a write to fra failed with %v (want only TRYAGAIN)", e)
	}
	if refused.Load() == 0 {
		t.Fatal("fra never refused a write while it recovered")
	}
	t.Logf("rebuild of fra under load: %+v; %d writes to fra refused meanwhile, %d increments acknowledged", v, refused.Load(), acked.Load())
	// fra writes again: its sequence continues after its stream
	shipped := func() bool { n, err := fra.d.Engine.LogLen(ctx); return err == nil && n == 0 }
	eventually(t, "fra shipped its op log", shipped)
	lastBefore := checkStreamOpIDs(t, fra)
	for range 10 {
		must(t, fra.c.IncrBy(ctx, "n", 1).Err())
	}
	acked.Add(10)
	want := fmt.Sprint(acked.Load())
	deadline := time.Now().Add(20 * time.Second)
	for {
		var got []string
		for _, r := range []*region{sgp, fra, iad} {
			v, _ := r.c.Get(ctx, "n").Result()
			if v != want {
				got = append(got, r.name+"="+v)
			}
		}
		if len(got) == 0 {
			break
		}
		if time.Now().After(deadline) {
			var pos []string
			for _, r := range []*region{sgp, fra, iad} {
				p, _ := r.d.Engine.Position(ctx)
				raw, _ := r.d.Engine.Redis().Get(ctx, "n").Result()
				el, _, err := crdt.UnmarshalState(crdt.TypeString, []byte(raw))
				pos = append(pos, fmt.Sprintf("%s seq %d applied %v state of n: %+v %v", r.name, p.Seq, p.Applied, el, err))
			}
			t.Fatalf("n should be %s (acknowledged increments): %v\n%s", want, got, strings.Join(pos, "\n"))
		}
		time.Sleep(50 * time.Millisecond)
	}
	c.converged(6)
	eventually(t, "fra shipped its op log", shipped)
	if last := checkStreamOpIDs(t, fra); last != lastBefore+10 {
		t.Fatalf("fra's stream ends at %d after 10 writes, was %d", last, lastBefore)
	}
	for _, r := range []*region{sgp, iad} {
		checkStreamOpIDs(t, r)
	}
}

// TestRebuildTakeover: region fra has two children on one Redis; its
// Redis loses its data and a rebuild from sgp starts. The child that holds
// the rebuild lease stops in the middle of it: the other child takes the
// lease once it expires and starts the rebuild over, which finishes. fra
// refuses writes until then, and in the end holds every key and counts
// every acknowledged increment once, as sgp does.
func TestRebuildTakeover(t *testing.T) {
	c, mgr := newCLI(t)
	ctx := context.Background()
	c.ok("instance", "create")
	sgp := startChild(t, mgr, "sgp")
	fraA := startChildWith(t, mgr, "fra", func(cfg *daemon.Config) { cfg.Owner = "fra-a" })
	fraB := startChildWith(t, mgr, "fra", func(cfg *daemon.Config) {
		cfg.Owner = "fra-b"
		cfg.Redis = *fraA.d.Engine.Redis().Options()
		cfg.NATS.URL = fraA.nats.URL()
	})
	fraB.nats = fraA.nats
	c.addRegion(sgp)
	c.addRegion(fraA)
	// enough keys that copying them takes a while
	const keys = 20000
	pipe := sgp.c.Pipeline()
	for i := range keys {
		pipe.Set(ctx, fmt.Sprintf("k%d", i), i, 0)
	}
	_, err := pipe.Exec(ctx)
	must(t, err)
	for range 50 {
		must(t, sgp.c.IncrBy(ctx, "n", 1).Err())
		must(t, fraA.c.IncrBy(ctx, "n", 1).Err())
	}
	eventually(t, "fra applied sgp's ops and sgp fra's", func() bool {
		ps, _ := sgp.d.Engine.Position(ctx)
		pf, _ := fraA.d.Engine.Position(ctx)
		nf, _ := fraA.d.Engine.LogLen(ctx)
		return pf.Applied["sgp"] == ps.Seq && ps.Applied["fra"] == pf.Seq && nf == 0
	})
	waitGet(t, sgp.c, "n", "100")

	raw := redis.NewClient(&redis.Options{Addr: fraA.d.Engine.Redis().Options().Addr})
	defer func() { _ = raw.Close() }()
	must(t, raw.FlushAll(ctx).Err())
	type result struct {
		out, errOut string
		code        int
	}
	done := make(chan result, 1)
	go func() {
		out, errOut, code := c.run("rebuild", "fra", "--from", "sgp", "--json", "--quiet", "--timeout", "120s")
		done <- result{out, errOut, code}
	}()
	// The child with the rebuild lease, once the rebuild marked the Redis
	// and copied some of the keys.
	meta := redis.NewClient(&redis.Options{Addr: fraA.d.Engine.Redis().Options().Addr, DB: 1})
	defer func() { _ = meta.Close() }()
	var holder string
	deadline := time.Now().Add(60 * time.Second)
	for {
		holder, _ = meta.Get(ctx, "lease:rebuild").Result()
		n, _ := raw.DBSize(ctx).Result()
		marked, _ := meta.HExists(ctx, "meta", "rebuild").Result()
		if holder != "" && marked && n > 100 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no rebuild in progress: lease %q, %d keys", holder, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
	stopped, other, otherOwner := fraA, fraB, "fra-b"
	if holder == "fra-b" {
		stopped, other, otherOwner = fraB, fraA, "fra-a"
	}
	n, _ := raw.DBSize(ctx).Result()
	t.Logf("stopping %s (the rebuild's lease holder) after %d keys were copied", holder, n)
	stopped.stop()
	if n >= keys {
		t.Fatalf("the copy was done (%d keys) before the lease holder stopped: nothing to take over", n)
	}
	// The other child refuses writes until its own rebuild ends.
	if err := other.c.Set(ctx, "during", "x", 0).Err(); err == nil || !strings.HasPrefix(err.Error(), "TRYAGAIN") {
		t.Fatalf("a write to fra while its rebuild is interrupted: %v", err)
	}
	var res result
	select {
	case res = <-done:
	case <-time.After(150 * time.Second):
		t.Fatal("the rebuild did not end")
	}
	var v rebuildView
	if res.code != exitOK || strictJSON(res.out, &v) != nil || v.Phase != manager.RebuildDone || v.KeysCopied < keys {
		t.Fatalf("rebuild: exit %d, %+v\nstdout: %s\nstderr: %s", res.code, v, res.out, res.errOut)
	}
	if h, _ := meta.Get(ctx, "lease:rebuild").Result(); h != otherOwner && h != "" {
		t.Fatalf("the rebuild lease is held by %q, want %s", h, otherOwner)
	}
	t.Logf("rebuild taken over: %+v", v)
	must(t, other.c.IncrBy(ctx, "n", 1).Err())
	waitGet(t, sgp.c, "n", "101")
	waitGet(t, other.c, "n", "101")
	if n, _ := other.c.DBSize(ctx).Result(); n != keys+1 {
		t.Fatalf("fra holds %d keys after the rebuild, want %d", n, keys+1)
	}
	for _, k := range []string{"k0", fmt.Sprint("k", keys/2), fmt.Sprint("k", keys-1)} {
		want, _ := sgp.c.Get(ctx, k).Result()
		waitGet(t, other.c, k, want)
	}
}

// TestRebuildErrors: bad input gets a clear error with the CLI's exit
// codes, and nothing changes.
func TestRebuildErrors(t *testing.T) {
	c, mgr := newCLI(t)
	c.ok("instance", "create")
	sgp := startChild(t, mgr, "sgp")
	c.addRegion(sgp)
	c.fails(exitUsage, "--from", "rebuild", "sgp")
	c.fails(exitUsage, "from itself", "rebuild", "sgp", "--from", "sgp")
	c.fails(exitUsage, "region id", "rebuild", "Bad", "--from", "sgp")
	c.fails(exitUsage, "wants 1 argument", "rebuild", "--from", "sgp")
	c.fails(exitUsage, "--timeout", "rebuild", "sgp", "--from", "fra", "--timeout", "0s")
	c.fails(exitNotFound, "no such region", "rebuild", "nope", "--from", "sgp")
	c.fails(exitNotFound, "no such region", "rebuild", "sgp", "--from", "nope")
	// a peer nobody answers for
	c.ok("region", "add", "lon", "--region-nats", "nats://127.0.0.1:1", "--redis", "127.0.0.1:1")
	c.fails(exitFailure, "peer lon is unreachable", "rebuild", "sgp", "--from", "lon")
	// a target without a running child
	c.fails(exitFailure, "region lon has no running child", "rebuild", "lon", "--from", "sgp")
	var regions []regionView
	c.json(&regions, "region", "list")
	for _, r := range regions {
		if r.State != "active" {
			t.Fatalf("region changed: %+v", r)
		}
	}
	s, err := manager.Bind(context.Background(), mustJS(t, mgr), "shop")
	must(t, err)
	for _, id := range []string{"sgp", "lon"} {
		r, err := s.GetRegion(context.Background(), id)
		must(t, err)
		if r.Rebuild != nil {
			t.Fatalf("a refused rebuild was recorded: %+v", r.Rebuild)
		}
	}
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// mustJS returns a JetStream context on a test NATS server.
func mustJS(t *testing.T, s *testnats.Server) jetstream.JetStream {
	t.Helper()
	_, js := s.Connect()
	return js
}

// strictJSON decodes out into v, every field known.
func strictJSON(out string, v any) error {
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
