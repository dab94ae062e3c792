package child

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/globalreplica/globalreplica/crdt"
)

// TestDigestMatchesDumpAndModel: the engine's digest is the digest of what
// Dump reads and of the model's visible state after the same writes.
func TestDigestMatchesDumpAndModel(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t, "sgp")
	for round := range 20 {
		if err := e.rdb.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if err := e.MarkReady(ctx); err != nil {
			t.Fatal(err)
		}
		model := crdt.NewStore("sgp")
		r := rand.New(rand.NewPCG(uint64(round), 41))
		for range 60 {
			now := time.Now().UnixMilli()
			c := randomCmd(r, now)
			_, _ = e.Write(ctx, c.args[0], c.args[1:]...)
			_, _, _ = c.model(model, now)
		}
		got, err := e.Digest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		dump := redisSnapshot(t, e)
		if want := DigestOf(dump); got != want {
			t.Fatalf("round %d: digest %+v, of the dump %+v", round, got, want)
		}
		if want := DigestOf(model.Snapshot(time.Now().UnixMilli())); got != want {
			t.Fatalf("round %d: digest %+v, of the model %+v\n%+v", round, got, want, dump)
		}
		if got.Keys != int64(len(dump)) {
			t.Fatalf("round %d: %d keys, dump has %d", round, got.Keys, len(dump))
		}
	}
}

// fill writes n keys of every type, some with a TTL.
func fill(t *testing.T, e *Engine, n int) {
	t.Helper()
	far := strconv.FormatInt(time.Now().Add(time.Hour).UnixMilli(), 10)
	var cmds [][]string
	for i := range n {
		k := fmt.Sprintf("key:%05d", i)
		switch i % 5 {
		case 0:
			cmds = append(cmds, []string{"set", k, "v" + k, "0", "0", "0", "0", "", "0"})
		case 1:
			cmds = append(cmds, []string{"hset", k, "a", "1", "b", k}, []string{"expire", k, "abs", far, ""})
		case 2:
			cmds = append(cmds, []string{"sadd", k, "x", "y", k})
		case 3:
			cmds = append(cmds, []string{"zadd", k, "", "1.5", "m", "-2", k})
		case 4:
			cmds = append(cmds, []string{"incrby", k, strconv.Itoa(i)})
		}
	}
	for len(cmds) > 0 {
		m := min(len(cmds), 500)
		_, errs := e.WritePipeline(context.Background(), cmds[:m])
		for _, err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		cmds = cmds[m:]
	}
}

// TestDigestBucketsAndKeys: many keys (several SCAN pages); the buckets
// add up to the digest, and the key digests of a bucket are the keys'.
func TestDigestBucketsAndKeys(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t, "sgp")
	fill(t, e, 2500)
	dump := redisSnapshot(t, e)
	d, buckets, err := e.Buckets(ctx, 6)
	if err != nil {
		t.Fatal(err)
	}
	if d != DigestOf(dump) || d.Keys != 2500 {
		t.Fatalf("digest %+v, of the dump %+v", d, DigestOf(dump))
	}
	if d0, err := e.Digest(ctx); err != nil || d0 != d {
		t.Fatalf("Digest %+v %v, Buckets' %+v", d0, err, d)
	}
	if len(buckets) != 64 {
		t.Fatalf("%d non-empty buckets of 64", len(buckets))
	}
	var acc Accumulator
	var n int64
	for _, b := range buckets {
		raw, _ := hex.DecodeString(b.Sum)
		var s [32]byte
		copy(s[:], raw)
		acc.Add(s)
		n += b.Keys
	}
	if hex.EncodeToString(acc.Sum[:]) != d.Sum || n != d.Keys {
		t.Fatalf("buckets do not add up: %x %d vs %+v", acc.Sum, n, d)
	}
	b := buckets[7]
	keys, truncated, err := e.KeyDigests(ctx, 6, []int{b.Bucket}, 0)
	if err != nil || truncated || int64(len(keys)) != b.Keys {
		t.Fatalf("bucket %+v: %d keys, truncated %v, %v", b, len(keys), truncated, err)
	}
	for _, k := range keys {
		s := KeySum(k.Key, dump[k.Key])
		if KeyBucket(k.Key, 6) != b.Bucket || k.Sum != hex.EncodeToString(s[:]) {
			t.Fatalf("key %q: bucket %d, sum %s", k.Key, KeyBucket(k.Key, 6), k.Sum)
		}
	}
	if keys, truncated, err := e.KeyDigests(ctx, 6, []int{b.Bucket}, 3); err != nil || !truncated || len(keys) != 3 {
		t.Fatalf("limit 3: %d keys, truncated %v, %v", len(keys), truncated, err)
	}
	views, err := e.View(ctx, []string{"key:00000", "key:00001", "key:00002", "key:00003", "key:00004", "nope"})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{`string 10 "vkey:00000"`, `hash 2 a="1" b="key:00001"`, `set 3 "key:00002" "x" "y"`, `zset 2 "key:00003":-2 "m":1.5`, `string 1 "4"`}
	for i, w := range want {
		if got := fmt.Sprintf("%s %d %s", views[i].Type, views[i].Len, views[i].Value); got != w || !views[i].Exists {
			t.Fatalf("view %d: %q, want %q", i, got, w)
		}
	}
	if views[1].DeadlineMs == 0 || views[0].DeadlineMs != 0 || views[5].Exists {
		t.Fatalf("views %+v", views)
	}
}

// TestDigestConvergedAndCorrupted: two regions that applied the same ops
// have equal digests; a write made directly in one region's database 0
// (bypassing the engine, as corruption would) makes them differ, and the
// buckets and key digests point at that key.
func TestDigestConvergedAndCorrupted(t *testing.T) {
	ctx := context.Background()
	a, b := newTestEngine(t, "fra"), newTestEngine(t, "sgp")
	fill(t, a, 1200)
	raw, err := a.ReadLog(ctx, 100000)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Apply(ctx, "fra", raw); err != nil {
		t.Fatal(err)
	}
	da, _ := a.Digest(ctx)
	db, _ := b.Digest(ctx)
	if da != db || da.Keys != 1200 {
		t.Fatalf("converged regions: %+v vs %+v", da, db)
	}
	for _, corrupt := range []func() error{
		func() error { return b.rdb.HSet(ctx, "key:00001", "a", "2").Err() },
		func() error { return b.rdb.SAdd(ctx, "key:00002", "intruder").Err() },
		func() error { return b.rdb.PExpire(ctx, "key:00003", time.Hour).Err() },
		func() error { return b.rdb.Del(ctx, "key:00004").Err() },
	} {
		if err := corrupt(); err != nil {
			t.Fatal(err)
		}
	}
	db, _ = b.Digest(ctx)
	if da == db {
		t.Fatal("digests equal after corruption")
	}
	_, ba, _ := a.Buckets(ctx, 8)
	_, bb, _ := b.Buckets(ctx, 8)
	sums := map[int]string{}
	for _, x := range ba {
		sums[x.Bucket] = x.Sum
	}
	for _, x := range bb {
		sums[x.Bucket] += "|" + x.Sum
	}
	var diff []int
	for bk, s := range sums {
		if len(s) != 2*64+1 || s[:64] != s[65:] {
			diff = append(diff, bk)
		}
	}
	ka, _, _ := a.KeyDigests(ctx, 8, diff, 0)
	kb, _, _ := b.KeyDigests(ctx, 8, diff, 0)
	m := map[string]string{}
	for _, k := range ka {
		m[k.Key] = k.Sum
	}
	for _, k := range kb {
		if m[k.Key] == k.Sum {
			delete(m, k.Key)
		} else {
			m[k.Key] += "|" + k.Sum
		}
	}
	var keys []string
	for k := range m {
		keys = append(keys, k)
	}
	if fmt.Sprint(slices.Sorted(slices.Values(keys))) != "[key:00001 key:00002 key:00003 key:00004]" {
		t.Fatalf("differing keys %v (buckets %v)", keys, diff)
	}
}
