package child

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/globalreplica/globalreplica/crdt"
)

// TestGCMatchesModel runs the concurrent histories of the remote
// differential test (two model regions and the engine's region) and, at
// random points, collects tombstones in the engine with gr_gc and in the
// model with Key.GC with the same floor. The engine's state must equal the
// model's element by element (tombstones included) after every collection.
//
// With valid floors (the pointwise minimum of every region's applied
// vector, as the manager computes it), the ops that arrive later, all above
// the floor, must not resurrect anything: in the end the engine shows the
// same state as a witness region that received every op and never
// collected. With arbitrary floors (rounds marked wild) the collection is
// unsafe for the semantics, but the engine must still do exactly what the
// model does.
func TestGCMatchesModel(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t, "iad")
	collected, gcRuns, droppedKeys := 0, 0, 0
	for round := range 40 {
		wild := round%4 == 3
		h := newHistory(t, e, uint64(round), 31)
		collect := func(what string) {
			pos, err := e.Position(ctx)
			if err != nil {
				t.Fatal(err)
			}
			floor := crdt.Min(pos.Applied, h.regions["fra"].store.Applied, h.regions["sgp"].store.Applied)
			if wild {
				floor = crdt.Vector{}
				all := h.all()
				for _, reg := range []string{"fra", "sgp", "iad"} { // fixed order: a seed replays the same floors
					if n := len(all[reg]); n > 0 {
						floor[reg] = uint64(h.r.IntN(n + 1))
					}
				}
			}
			before, _ := e.meta.DBSize(ctx).Result()
			st, err := e.GC(ctx, floor)
			if err != nil {
				t.Fatal(err)
			}
			after, _ := e.meta.DBSize(ctx).Result()
			droppedKeys += int(before - after)
			collected += st.Collected()
			gcRuns++
			h.mirror.GC(floor)
			if !wild {
				for _, reg := range h.regions {
					reg.store.GC(floor)
				}
			}
			what = fmt.Sprintf("%s: after GC with floor %v", what, floor)
			sameSnapshot(t, what, redisSnapshot(t, e), h.mirror.Snapshot(time.Now().UnixMilli()))
			sameState(t, what, e, h.mirror, false)
			// a second collection with the same floor finds nothing
			if st, err := e.GC(ctx, floor); err != nil || st.Collected() != 0 {
				t.Fatalf("%s: second collection: %+v %v", what, st, err)
			}
		}
		for step := range 150 {
			now := time.Now().UnixMilli()
			switch x := h.r.IntN(12); {
			case x < 3:
				h.localWrite(now)
			case x < 6:
				h.remoteWrite(now)
			case x < 8:
				h.deliverToEngine(h.randomRemote(), false)
			case x < 10:
				h.deliverToModel(h.regions[h.randomRemote()])
			default:
				collect(fmt.Sprintf("round %d step %d", round, step))
			}
		}
		h.deliverAll()
		collect(fmt.Sprintf("round %d final", round))
		if wild {
			continue
		}
		witness := crdt.NewStore("witness")
		for _, src := range h.all() {
			for _, op := range src {
				witness.Apply(op)
			}
		}
		now := time.Now().UnixMilli()
		got := redisSnapshot(t, e)
		sameSnapshot(t, fmt.Sprintf("round %d: engine after GC vs a region that never collected", round), got, witness.Snapshot(now))
		for name, reg := range h.regions {
			sameSnapshot(t, fmt.Sprintf("round %d: engine vs %s", round, name), got, reg.store.Snapshot(now))
		}
	}
	if gcRuns < 100 || collected < 200 || droppedKeys < 20 {
		t.Fatalf("weak histories: %d collections, %d tombstones collected, %d state keys dropped", gcRuns, collected, droppedKeys)
	}
	t.Logf("%d collections, %d tombstones collected, %d state keys dropped", gcRuns, collected, droppedKeys)
}

// TestGCNoResurrection: a deleted value whose tombstone was collected does
// not come back when an op above the floor arrives, and a removal context
// that a live counter run of its region still needs is kept.
func TestGCNoResurrection(t *testing.T) {
	ctx := context.Background()
	p := newPair(t, "iad", "fra")
	// fra writes, iad applies, iad deletes, fra applies the delete
	set := p.remoteWrite("k", func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, error) {
		op, _, _, _, err := k.Set("k", "old", crdt.SetOpts{}, st)
		return op, err
	})
	p.deliver(set)
	p.local("del", "k")
	p.local("hset", "h", "f", "1")
	p.local("hdel", "h", "f")
	p.toRemote()
	// both regions applied everything: the floor covers it all
	pos, err := p.e.Position(ctx)
	if err != nil {
		t.Fatal(err)
	}
	floor := crdt.Min(pos.Applied, p.remote.Applied)
	n, err := p.e.CollectTombstones(ctx, floor)
	if err != nil {
		t.Fatal(err)
	}
	if n == 0 {
		t.Fatal("nothing collected")
	}
	p.mirror.GC(floor)
	p.remote.GC(floor)
	sameState(t, "after GC", p.e, p.mirror, false)
	if keys, _ := p.e.meta.Keys(ctx, "[khszx]:*").Result(); len(keys) != 0 {
		t.Fatalf("state left after collecting everything: %v", keys)
	}
	// later ops of fra, above the floor, bring back nothing deleted
	later := p.remoteWrite("k", func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, error) {
		op, _, err := k.HSet("k", []crdt.Field{{Name: "g", Val: "x"}}, st)
		return op, err
	})
	later2 := p.remoteWrite("h", func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, error) {
		op, _, err := k.HSet("h", []crdt.Field{{Name: "g", Val: "y"}}, st)
		return op, err
	})
	p.deliver(later, later2)
	for key, want := range map[string]string{"k": "g=x", "h": "g=y"} {
		v, ok, err := p.e.DumpKey(ctx, key)
		if err != nil || !ok || v.Type != crdt.TypeHash || len(v.Fields) != 1 || v.Fields[0].Name+"="+v.Fields[0].Val != want {
			t.Fatalf("%s after GC and a later write: %+v %v %v", key, v, ok, err)
		}
	}
	p.mirror.GC(floor)
	sameState(t, "after later ops", p.e, p.mirror, false)

	// a counter: iad increments, fra deletes what it observed, iad keeps
	// incrementing in the same run before it sees the delete
	p.local("incrby", "c", "5")
	p.toRemote()
	del := p.remoteWrite("c", func(k *crdt.Key, st crdt.Stamp) (*crdt.Op, error) {
		op, _ := k.Del("c", st)
		return op, nil
	})
	p.local("incrby", "c", "2") // concurrent with the delete: survives
	p.deliver(del)
	if v, _, _ := p.e.Get(ctx, "c"); v != "2" {
		t.Fatalf("c = %q, want 2", v)
	}
	pos, _ = p.e.Position(ctx)
	p.toRemote()
	floor = crdt.Min(pos.Applied, p.remote.Applied)
	if _, err := p.e.CollectTombstones(ctx, floor); err != nil {
		t.Fatal(err)
	}
	p.mirror.GC(floor)
	sameState(t, "counter after GC", p.e, p.mirror, false)
	// the removal context is still needed to subtract the 5: it stays
	raw, err := p.e.rdb.Get(ctx, "c").Result()
	if err != nil {
		t.Fatal(err)
	}
	el, _, _ := crdt.UnmarshalState(crdt.TypeString, []byte(raw))
	if _, ok := el.Rm["iad"]; !ok {
		t.Fatalf("the removal context a live run needs was collected: %+v", el)
	}
	p.local("incrby", "c", "1")
	if v, _, _ := p.e.Get(ctx, "c"); v != "3" {
		t.Fatalf("c = %q, want 3", v)
	}
}

// TestGCPassesOverCollectedRecords: a collection decodes only the state
// records that hold a removal context; once it dropped those, the next
// pass scans the same keys without decoding any of them.
func TestGCPassesOverCollectedRecords(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t, "iad")
	const n = 300
	for round := range 2 { // the second write observes the first: a removal context
		for i := range n {
			if _, err := e.Write(ctx, "set", fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", round), "0", "0", "0", "0", "", "0"); err != nil {
				t.Fatal(err)
			}
		}
	}
	for i := range n / 3 { // and some hash fields, overwritten too
		for round := range 2 {
			if _, err := e.Write(ctx, "hset", "h", fmt.Sprintf("f%d", i), fmt.Sprintf("v%d", round)); err != nil {
				t.Fatal(err)
			}
		}
	}
	pos, err := e.Position(ctx)
	if err != nil {
		t.Fatal(err)
	}
	floor := crdt.Vector{"iad": pos.Seq}
	first, err := e.GC(ctx, floor)
	if err != nil {
		t.Fatal(err)
	}
	if first.Decoded < n+n/3 || first.Removals < n+n/3 {
		t.Fatalf("first collection %+v: want every record decoded and its removal context dropped", first)
	}
	second, err := e.GC(ctx, floor)
	if err != nil {
		t.Fatal(err)
	}
	if second.Scanned < n || second.Decoded != 0 || second.Collected() != 0 {
		t.Fatalf("second collection %+v: want the records scanned, none decoded, nothing collected", second)
	}
	for i := range n {
		if v, ok, err := e.Get(ctx, fmt.Sprintf("k%d", i)); err != nil || !ok || v != "v1" {
			t.Fatalf("k%d = %q %v %v", i, v, ok, err)
		}
	}
}
