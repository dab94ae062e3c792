package child

import (
	"bytes"
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/globalreplica/globalreplica/crdt"
)

// TestFastApplyMin: batches smaller than FastApplyMin go to gr_apply as they
// are (one round trip, for a channel in step with its origin); larger ones
// take the fast path, and both leave the same values.
func TestFastApplyMin(t *testing.T) {
	ctx := context.Background()
	src := newTestEngine(t, "sgp")
	dst := newTestEngineWith(t, EngineConfig{Instance: "test", Region: "fra"}) // the default FastApplyMin
	n := DefaultFastApplyMin + 10
	for i := range n {
		if _, err := src.Write(ctx, "set", fmt.Sprintf("k%d", i), fmt.Sprintf("v%d", i), "0", "0", "0", "0", "", "0"); err != nil {
			t.Fatal(err)
		}
	}
	ops, err := src.ReadLog(ctx, int64(n))
	if err != nil || len(ops) != n {
		t.Fatalf("op log: %d ops, %v", len(ops), err)
	}
	small, err := dst.Apply(ctx, "sgp", ops[:10])
	if err != nil {
		t.Fatal(err)
	}
	large, err := dst.Apply(ctx, "sgp", ops[10:])
	if err != nil {
		t.Fatal(err)
	}
	if small.Applied != 10 || small.Fast != 0 || large.Applied != n-10 || large.Fast != n-10 {
		t.Fatalf("batch of 10: %+v; batch of %d: %+v; want the fast path only for the second", small, n-10, large)
	}
	for i := range n {
		v, ok, err := dst.Get(ctx, fmt.Sprintf("k%d", i))
		if err != nil || !ok || v != fmt.Sprintf("v%d", i) {
			t.Fatalf("k%d = %q, %v, %v", i, v, ok, err)
		}
	}
}

// TestApplyChainAhead: batches prepared while the batches before them are
// not applied yet read what those will write (the chain's records ahead),
// so that every fast item still applies by compare-and-set; a local write
// to a key between a batch's preparation and its commit sends that key's
// items the general way, and the values are the same either way.
func TestApplyChainAhead(t *testing.T) {
	ctx := context.Background()
	src := newTestEngine(t, "sgp")
	dst := newTestEngine(t, "fra")
	const keys, perBatch, batches = 5, 20, 3
	for i := range perBatch * batches {
		if _, err := src.Write(ctx, "set", fmt.Sprintf("k%d", i%keys), fmt.Sprintf("v%d", i), "0", "0", "0", "0", "", "0"); err != nil {
			t.Fatal(err)
		}
	}
	ops, err := src.ReadLog(ctx, perBatch*batches)
	if err != nil || len(ops) != perBatch*batches {
		t.Fatalf("op log: %d ops, %v", len(ops), err)
	}
	check := func(want func(i int) string) {
		t.Helper()
		for i := range keys {
			v, ok, err := dst.Get(ctx, fmt.Sprintf("k%d", i))
			if err != nil || !ok || v != want(i) {
				t.Fatalf("k%d = %q, %v, %v; want %q", i, v, ok, err, want(i))
			}
		}
	}
	last := func(i int) string { return fmt.Sprintf("v%d", perBatch*batches-keys+i) }

	// Every batch prepared before any is committed.
	ch := dst.newApplyChain("sgp")
	var prepared []*Prepared
	for b := range batches {
		p, err := ch.Prepare(ctx, ops[b*perBatch:(b+1)*perBatch])
		if err != nil {
			t.Fatal(err)
		}
		prepared = append(prepared, p)
	}
	for b, p := range prepared {
		res, err := ch.Commit(ctx, p)
		if err != nil {
			t.Fatal(err)
		}
		if res.Applied != perBatch || res.Fast != perBatch {
			t.Fatalf("batch %d: %+v; want all %d ops applied by compare-and-set", b, res, perBatch)
		}
	}
	check(last)

	// The same ops into a fresh region, with a local write to k0 after two
	// batches were prepared: k0's items in those go the general way, and in
	// the third too, prepared after the write but on what the chain assumed
	// the second would leave.
	dst2 := newTestEngine(t, "iad")
	ch = dst2.newApplyChain("sgp")
	p1, err := ch.Prepare(ctx, ops[:perBatch])
	if err != nil {
		t.Fatal(err)
	}
	p2, err := ch.Prepare(ctx, ops[perBatch:2*perBatch])
	if err != nil {
		t.Fatal(err)
	}
	if _, err := dst2.Write(ctx, "set", "k0", "local", "0", "0", "0", "0", "", "0"); err != nil {
		t.Fatal(err)
	}
	p3, err := ch.Prepare(ctx, ops[2*perBatch:])
	if err != nil {
		t.Fatal(err)
	}
	fast := 0
	for _, p := range []*Prepared{p1, p2, p3} {
		res, err := ch.Commit(ctx, p)
		if err != nil || res.Applied != perBatch {
			t.Fatalf("%+v, %v", res, err)
		}
		fast += res.Fast
	}
	if slow := perBatch*batches - fast; slow != perBatch*batches/keys {
		t.Fatalf("%d items went the general way; want k0's %d", slow, perBatch*batches/keys)
	}
	// What the chain kept ahead is forgotten once applied.
	if ch.prune(ch.applied.Load()); len(ch.inflight) != 0 {
		t.Fatalf("the chain still holds the records of %d batches", len(ch.inflight))
	}
	dst = dst2
	check(func(i int) string {
		if i == 0 {
			// The local write is newer than every op of sgp's.
			return "local"
		}
		return last(i)
	})
}

// TestFastMergeReadsLuaForms: the ops and state records that Redis's Lua
// functions encode (cmsgpack, not the Go encoder) are read in place by the
// fast merge (crdt.ParseStringSet, crdt.MergeStringSet), with the model's
// result: plain writes, overwrites, a counter's record and a value of 40
// bytes.
func TestFastMergeReadsLuaForms(t *testing.T) {
	ctx := context.Background()
	src := newTestEngine(t, "sgp")
	for _, w := range [][]string{
		{"set", "a", "1", "0", "0", "0", "0", "", "0"},
		{"set", "a", "2", "0", "0", "0", "0", "", "0"},
		{"incrby", "n", "5"},
		{"set", "n", strings.Repeat("x", 40), "0", "0", "0", "0", "", "0"},
		{"set", "b", "v", "0", "0", "0", "0", "", "0"},
	} {
		if _, err := src.Write(ctx, w[0], w[1:]...); err != nil {
			t.Fatal(err)
		}
	}
	ops, err := src.ReadLog(ctx, 10)
	if err != nil || len(ops) != 5 {
		t.Fatalf("op log: %d ops, %v", len(ops), err)
	}
	// Each SET op merged into the record its key held before it, as Lua
	// wrote it: src's ops applied one by one by an engine whose batches of
	// one op go to gr_apply as they are (no fast path).
	dst := newTestEngineWith(t, EngineConfig{Instance: "test", Region: "fra"}) // the default FastApplyMin
	for i, b := range ops {
		op, err := crdt.UnmarshalOp(b)
		if err != nil {
			t.Fatal(err)
		}
		raw, err := dst.Redis().Get(ctx, op.Key).Result()
		var rec []byte
		if err == nil {
			rec = []byte(raw)
		}
		set, ok := crdt.ParseStringSet(b)
		if isSet := op.Elems[0].Kind == crdt.KindSet; ok != isSet {
			t.Fatalf("op %d (%s %s): ParseStringSet %v", i, op.Key, op.Elems[0].Val, ok)
		}
		if ok {
			got, gotOK, handled := crdt.MergeStringSet(rec, &set)
			want, wantOK := crdt.MergeStringRecord(rec, op)
			if !handled || gotOK != wantOK || !bytes.Equal(got, want) {
				t.Fatalf("op %d into %x: fast %x %v %v, model %x %v", i, rec, got, gotOK, handled, want, wantOK)
			}
		}
		if res, err := dst.Apply(ctx, "sgp", [][]byte{b}); err != nil || res.Fast != 0 {
			t.Fatalf("apply: %+v %v (want the Lua merge)", res, err)
		}
	}
}
