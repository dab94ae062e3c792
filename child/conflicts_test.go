package child

import (
	"context"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/globalreplica/globalreplica/crdt"
)

// pair is an engine region and a model region that exchange ops by hand.
type pair struct {
	t      *testing.T
	e      *Engine
	remote *crdt.Store // the model of the other region
	mirror *crdt.Store // the model replica of the engine's region
	out    []*crdt.Op  // the engine's ops not yet at the remote region
}

func newPair(t *testing.T, region, remote string) *pair {
	return &pair{t: t, e: newTestEngine(t, region), remote: crdt.NewStore(remote), mirror: crdt.NewStore(region)}
}

// local runs a write on the engine and brings its op into the mirror.
func (p *pair) local(args ...string) {
	p.t.Helper()
	if _, err := p.e.Write(context.Background(), args[0], args[1:]...); err != nil {
		p.t.Fatalf("%v: %v", args, err)
	}
	for _, op := range p.drain() {
		p.mirror.Apply(op)
		p.out = append(p.out, op)
	}
}

// drain takes the engine's own ops out of its op log.
func (p *pair) drain() []*crdt.Op {
	p.t.Helper()
	ctx := context.Background()
	raw, err := p.e.ReadLog(ctx, 10000)
	if err != nil {
		p.t.Fatal(err)
	}
	if _, err := p.e.TrimLog(ctx, lastSeq(p.t, raw)); err != nil {
		p.t.Fatal(err)
	}
	var out []*crdt.Op
	for _, b := range raw {
		op, err := crdt.UnmarshalOp(b)
		if err != nil {
			p.t.Fatal(err)
		}
		out = append(out, op)
	}
	return out
}

// remoteWrite makes an op in the remote model region.
func (p *pair) remoteWrite(key string, f func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, error)) *crdt.Op {
	p.t.Helper()
	op, err := p.remote.Write(key, time.Now().UnixMilli(), f)
	if err != nil || op == nil {
		p.t.Fatalf("remote write of %s: %v %v", key, op, err)
	}
	return op
}

// deliver applies remote ops to the engine in one batch and to the mirror,
// and checks that both report the same conflict kinds.
func (p *pair) deliver(ops ...*crdt.Op) ApplyResult {
	p.t.Helper()
	var batch [][]byte
	want := map[string]int{}
	for _, op := range ops {
		b, err := op.MarshalBinary()
		if err != nil {
			p.t.Fatal(err)
		}
		batch = append(batch, b)
		for _, c := range p.mirror.Apply(op) {
			want[c]++
		}
	}
	res, err := p.e.Apply(context.Background(), ops[0].ID.Region, batch)
	if err != nil {
		p.t.Fatal(err)
	}
	got := res.Conflicts
	if got == nil {
		got = map[string]int{}
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		p.t.Fatalf("conflicts: engine %v, model %v", got, want)
	}
	return res
}

// toRemote brings the engine's pending ops to the remote model region.
func (p *pair) toRemote() {
	for _, op := range p.out {
		p.remote.Apply(op)
	}
	p.out = nil
}

func TestConflictLogRecordsEveryKind(t *testing.T) {
	ctx := context.Background()
	p := newPair(t, "iad", "fra")
	far := time.Now().Add(time.Hour).UnixMilli()

	// lww: concurrent SETs
	p.local("set", "s", "mine", "0", "0", "0", "0", "", "0")
	lww := p.remoteWrite("s", func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, error) {
		st.TS.Ms += 10_000 // fra's write is clearly later
		op, _, _, _, err := k.Set("s", "theirs", crdt.SetOpts{}, st)
		return op, err
	})
	p.deliver(lww)

	// set-incr: a SET that did not observe increments
	p.local("incrby", "c", "5")
	setc := p.remoteWrite("c", func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, error) {
		op, _, _, _, err := k.Set("c", "10", crdt.SetOpts{}, st)
		return op, err
	})
	p.deliver(setc)
	if v, _, _ := p.e.Get(ctx, "c"); v != "15" {
		t.Fatalf("c = %q, want 15", v)
	}

	// remove: fra deletes the field it wrote, iad overwrote it meanwhile
	hset := p.remoteWrite("h", func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, error) {
		op, _, err := k.HSet("h", []crdt.Field{{Name: "f", Val: "a"}}, st)
		return op, err
	})
	p.deliver(hset)
	p.local("hset", "h", "f", "b")
	hdel := p.remoteWrite("h", func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, error) {
		op, _, err := k.HDel("h", []string{"f"}, st)
		return op, err
	})
	p.deliver(hdel)

	// ttl: both regions set a TTL on a key they both have
	p.local("set", "x", "v", "0", "0", "0", "0", "", "0")
	p.toRemote()
	p.local("expire", "x", "abs", strconv.FormatInt(far, 10), "")
	exp := p.remoteWrite("x", func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, error) {
		op, _ := k.Expire("x", far+60_000, crdt.ExpireAlways, st)
		return op, nil
	})
	p.deliver(exp)

	// type: a string here, a hash there
	p.local("set", "y", "str", "0", "0", "0", "0", "", "0")
	hy := p.remoteWrite("y", func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, error) {
		op, _, err := k.HSet("y", []crdt.Field{{Name: "f", Val: "v"}}, st)
		return op, err
	})
	p.deliver(hy)

	got, err := p.e.Conflicts(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	var kinds []string
	for _, c := range got {
		kinds = append(kinds, c.Kind)
	}
	if want := []string{"type", "ttl", "remove", "set-incr", "lww"}; !slices.Equal(kinds, want) {
		t.Fatalf("kinds newest first: %v, want %v\n%+v", kinds, want, got)
	}
	byKind := map[string]Conflict{}
	for _, c := range got {
		byKind[c.Kind] = c
		t.Logf("%s %s %s: %s", c.Kind, c.Key, c.Op, c.Why)
		if c.Time.IsZero() || time.Since(c.Time) > time.Minute {
			t.Fatalf("conflict time %v", c.Time)
		}
	}
	c := byKind["lww"]
	if c.Key != "s" || c.Type != "string" || c.Op != lww.ID.String() || c.Winner != "fra" || c.Won == nil ||
		c.Won.Value != "theirs" || len(c.Lost) != 1 || c.Lost[0].Region != "iad" || c.Lost[0].Value != "mine" ||
		c.Won.Ms != lww.TS.Ms || !strings.Contains(c.Why, "last writer wins") {
		t.Fatalf("lww record: %+v", c)
	}
	c = byKind["set-incr"]
	if c.Key != "c" || c.Winner != "iad" || !strings.Contains(c.Why, "unobserved increments added on top") {
		t.Fatalf("set-incr record: %+v", c)
	}
	c = byKind["remove"]
	if c.Key != "h" || c.Type != "hash" || c.Field != "f" || c.Winner != "iad" || c.Op != hdel.ID.String() ||
		!strings.Contains(c.Why, "concurrent write survived: observed-remove") {
		t.Fatalf("remove record: %+v", c)
	}
	c = byKind["ttl"]
	if c.Key != "x" || c.Type != "string" || c.DeadlineMs != far+60_000 || c.Winner != "fra" || !strings.Contains(c.Why, "longest TTL") {
		t.Fatalf("ttl record: %+v", c)
	}
	c = byKind["type"]
	if c.Key != "y" || c.Type != "string" || c.Winner != "string" || !strings.Contains(c.Why, "string, hash") {
		t.Fatalf("type record: %+v", c)
	}
	counts, err := p.e.ConflictCounts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(counts) != "map[lww:1 remove:1 set-incr:1 ttl:1 type:1]" {
		t.Fatalf("counts %v", counts)
	}
	if n, _ := p.e.Conflicts(ctx, 2); len(n) != 2 || n[0].Kind != "type" {
		t.Fatalf("Conflicts(2) = %+v", n)
	}

	// PERSIST beats the TTLs
	per := p.remoteWrite("x", func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, error) {
		op, _ := k.Persist("x", st)
		return op, nil
	})
	p.local("expire", "x", "abs", strconv.FormatInt(far+120_000, 10), "")
	p.deliver(per)
	got, _ = p.e.Conflicts(ctx, 1)
	if got[0].Kind != "ttl" || got[0].Winner != "fra" || got[0].DeadlineMs != 0 || !strings.Contains(got[0].Why, "PERSIST") {
		t.Fatalf("persist record: %+v", got[0])
	}
}

// TestConflictLogBounded: a batch with more conflicts than the log keeps
// leaves the newest ConflictLogSize, newest first; the counts keep all.
func TestConflictLogBounded(t *testing.T) {
	ctx := context.Background()
	p := newPair(t, "iad", "fra")
	n := ConflictLogSize + 200
	cmds := make([][]string, n)
	for i := range cmds {
		cmds[i] = []string{"set", fmt.Sprintf("k%04d", i), "mine", "0", "0", "0", "0", "", "0"}
	}
	if _, errs := p.e.WritePipeline(ctx, cmds); errs != nil {
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, op := range p.drain() {
		p.mirror.Apply(op)
	}
	var ops []*crdt.Op
	for i := range n {
		key := fmt.Sprintf("k%04d", i)
		ops = append(ops, p.remoteWrite(key, func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, error) {
			op, _, _, _, err := k.Set(key, "theirs", crdt.SetOpts{}, st)
			return op, err
		}))
	}
	p.deliver(ops...)
	got, err := p.e.Conflicts(ctx, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != ConflictLogSize || got[0].Key != fmt.Sprintf("k%04d", n-1) || got[len(got)-1].Key != fmt.Sprintf("k%04d", n-ConflictLogSize) {
		t.Fatalf("%d records, first %q last %q", len(got), got[0].Key, got[len(got)-1].Key)
	}
	if l, _ := p.e.meta.LLen(ctx, keyConflicts).Result(); l != ConflictLogSize {
		t.Fatalf("log length %d", l)
	}
	counts, _ := p.e.ConflictCounts(ctx)
	if counts["lww"] != int64(n) {
		t.Fatalf("counts %v", counts)
	}
	// ops without conflicts write no record
	before, _ := p.e.meta.LIndex(ctx, keyConflicts, 0).Result()
	op := p.remoteWrite("fresh", func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, error) {
		op, _, _, _, err := k.Set("fresh", "v", crdt.SetOpts{}, st)
		return op, err
	})
	p.deliver(op)
	if after, _ := p.e.meta.LIndex(ctx, keyConflicts, 0).Result(); after != before {
		t.Fatal("an op without conflict changed the log")
	}
}

// TestConflictKindsMatchModel runs random concurrent histories of two
// regions and checks that every batch the engine applies reports exactly
// the conflicts the model's Key.Apply reports (type conflicts included),
// and that the log holds one record per conflict.
func TestConflictKindsMatchModel(t *testing.T) {
	ctx := context.Background()
	total := map[string]int{}
	p := newPair(t, "iad", "fra")
	for round := range 30 {
		if err := p.e.rdb.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if err := p.e.MarkReady(ctx); err != nil {
			t.Fatal(err)
		}
		p.remote, p.mirror = crdt.NewStore("fra"), crdt.NewStore("iad")
		r := rand.New(rand.NewPCG(uint64(round), 23))
		var pending, toRemote []*crdt.Op
		round1 := map[string]int{}
		deliver := func(ops []*crdt.Op) {
			for k, v := range p.deliver(ops...).Conflicts {
				total[k] += v
				round1[k] += v
			}
		}
		for range 150 {
			now := time.Now().UnixMilli()
			switch x := r.IntN(10); {
			case x < 4:
				c := randomCmd(r, now)
				_, _ = p.e.Write(ctx, c.args[0], c.args[1:]...)
				for _, op := range p.drain() {
					p.mirror.Apply(op)
					toRemote = append(toRemote, op)
				}
				// the remote region sees some of the engine's ops before it
				// writes, the others later
				for len(toRemote) > 0 && r.IntN(3) == 0 {
					p.remote.Apply(toRemote[0])
					toRemote = toRemote[1:]
				}
			case x < 8:
				c := randomCmd(r, now+int64(r.IntN(41)-20))
				if _, op, _ := c.model(p.remote, now); op != nil {
					pending = append(pending, op)
				}
			default:
				if len(pending) > 0 {
					n := 1 + r.IntN(len(pending))
					deliver(pending[:n])
					pending = pending[n:]
				}
			}
		}
		if len(pending) > 0 {
			deliver(pending)
		}
		// one record and one count per conflict
		recs, err := p.e.Conflicts(ctx, 0)
		if err != nil {
			t.Fatal(err)
		}
		logged := map[string]int{}
		for _, c := range recs {
			logged[c.Kind]++
		}
		counts, err := p.e.ConflictCounts(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for k, n := range round1 {
			if logged[k] != n || counts[k] != int64(n) {
				t.Fatalf("round %d: %d %s conflicts, %d logged, %d counted", round, n, k, logged[k], counts[k])
			}
		}
	}
	for _, k := range []string{"lww", "set-incr", "remove", "ttl", "type"} {
		if total[k] == 0 {
			t.Fatalf("no %s conflict in the histories: %v", k, total)
		}
	}
	t.Logf("conflicts by kind: %v", total)
}
