package child

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// exportAll exports every phase of e and returns the export stream.
func exportAll(t *testing.T, e *Engine) ([]byte, int) {
	t.Helper()
	ctx := context.Background()
	var stream []byte
	n := 0
	for phase := range ExportPhases {
		cursor := "0"
		for {
			next, recs, err := e.ExportPage(ctx, phase, cursor, 50)
			if err != nil {
				t.Fatal(err)
			}
			for i := range recs {
				stream = AppendRecord(stream, &recs[i])
			}
			n += len(recs)
			if cursor = next; cursor == "0" {
				break
			}
		}
	}
	return stream, n
}

// rawState returns every Redis key of a region but its position, op log
// and leases, each as its type, content (sorted) and deadline.
func rawState(t *testing.T, e *Engine) map[string]string {
	t.Helper()
	ctx := context.Background()
	out := map[string]string{}
	for _, side := range []struct {
		name  string
		c     *redis.Client
		match string
	}{{"0/", e.rdb, "*"}, {"1/", e.meta, "[khszx]:*"}} {
		for _, k := range side.c.Keys(ctx, side.match).Val() {
			typ := side.c.Type(ctx, k).Val()
			var content []string
			switch typ {
			case "string":
				content = []string{side.c.Get(ctx, k).Val()}
			case "hash":
				for f, v := range side.c.HGetAll(ctx, k).Val() {
					content = append(content, f+"="+v)
				}
			case "set":
				content = side.c.SMembers(ctx, k).Val()
			case "zset":
				for _, z := range side.c.ZRangeWithScores(ctx, k, 0, -1).Val() {
					content = append(content, fmt.Sprintf("%v=%v", z.Member, z.Score))
				}
			}
			sort.Strings(content)
			out[side.name+k] = fmt.Sprintf("%s %q @%d", typ, content, side.c.PExpireTime(ctx, k).Val().Milliseconds())
		}
	}
	return out
}

// TestExportImport: a region's keys of every type, with TTLs, tombstones
// and a hash of 50,000 fields (larger than a chunk), exported, cut into
// chunks, decoded and imported into another region's Redis give the same
// Redis keys (values, state, deadlines) and the same digest.
func TestExportImport(t *testing.T) {
	ctx := context.Background()
	src, dst := newTestEngine(t, "sgp"), newTestEngine(t, "fra")
	fill(t, src, 400)
	// tombstones: deleted strings, a deleted hash, a removed set member
	for _, cmd := range [][]string{
		{"del", "key:00000"}, {"del", "key:00001"}, {"srem", "key:00002", "x"}, {"del", "key:00004"},
	} {
		if _, err := src.Write(ctx, cmd[0], cmd[1:]...); err != nil {
			t.Fatal(cmd, err)
		}
	}
	var big [][]string
	for i := 0; i < 50000; i += 1000 {
		cmd := []string{"hset", "big"}
		for j := i; j < i+1000; j++ {
			cmd = append(cmd, "field-"+strconv.Itoa(j), "value-"+strconv.Itoa(j))
		}
		big = append(big, cmd)
	}
	if _, errs := src.WritePipeline(ctx, big); errs[0] != nil {
		t.Fatal(errs[0])
	}
	// something in dst that the import must not leave behind is deleted
	// by the caller (WipeState); here dst holds a key the copy replaces
	if _, err := dst.Write(ctx, "set", "key:00005", "stale", "0", "0", "0", "0", "", "0"); err != nil {
		t.Fatal(err)
	}
	if _, err := dst.WipeState(ctx); err != nil {
		t.Fatal(err)
	}

	stream, n := exportAll(t, src)
	const chunk = 64 << 10
	bigRec := 0
	var buf []byte
	imported := 0
	for off := 0; off < len(stream); off += chunk {
		buf = append(buf, stream[off:min(off+chunk, len(stream))]...)
		recs, used, err := DecodeRecords(buf)
		if err != nil {
			t.Fatal(err)
		}
		buf = buf[used:]
		for i := range recs {
			if recs[i].Key == "big" {
				bigRec = max(bigRec, recs[i].Size())
			}
		}
		if err := dst.ImportRecords(ctx, recs); err != nil {
			t.Fatal(err)
		}
		imported += len(recs)
	}
	if len(buf) != 0 || imported != n {
		t.Fatalf("imported %d of %d records, %d bytes left", imported, n, len(buf))
	}
	if bigRec <= chunk {
		t.Fatalf("the big hash's copy has %d bytes, not more than a chunk (%d)", bigRec, chunk)
	}
	if got, want := rawState(t, dst), rawState(t, src); !reflect.DeepEqual(got, want) {
		var diff []string
		for k, v := range want {
			if got[k] != v {
				diff = append(diff, k)
			}
		}
		for k := range got {
			if _, ok := want[k]; !ok {
				diff = append(diff, k+" (extra)")
			}
		}
		sort.Strings(diff)
		t.Fatalf("%d of %d Redis keys differ after the import: %v", len(diff), len(want), diff[:min(len(diff), 10)])
	}
	d1, err := src.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	d2, err := dst.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d1 != d2 || d1.Keys != 400-3+1 {
		t.Fatalf("digests %+v and %+v", d1, d2)
	}
	// the tombstone of a deleted string came along
	if dst.meta.Exists(ctx, "k:key:00000").Val() != 1 {
		t.Fatal("the tombstone of key:00000 was not copied")
	}
}

// TestWipeStateKeepsPosition: the wipe deletes user keys and state keys
// but not the sequence, the applied vector, the op log or the leases.
func TestWipeStateKeepsPosition(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t, "sgp")
	fill(t, e, 50)
	if _, err := e.Apply(ctx, "fra", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Lease(ctx, "x", "me", time.Minute); err != nil {
		t.Fatal(err)
	}
	before, _ := e.Position(ctx)
	logLen, _ := e.LogLen(ctx)
	if _, err := e.WipeState(ctx); err != nil {
		t.Fatal(err)
	}
	after, _ := e.Position(ctx)
	n0, _, _ := e.KeyCounts(ctx)
	if n0 != 0 || after.Seq != before.Seq || e.meta.Exists(ctx, "lease:x").Val() != 1 {
		t.Fatalf("after the wipe: %d user keys, seq %d (was %d)", n0, after.Seq, before.Seq)
	}
	if l, _ := e.LogLen(ctx); l != logLen {
		t.Fatalf("op log %d, was %d", l, logLen)
	}
	if err := e.BeginRebuild(ctx, "r1"); err != nil {
		t.Fatal(err)
	}
	if ready, _ := e.Ready(ctx); ready {
		t.Fatal("ready during a rebuild")
	}
	if _, err := e.Write(ctx, "set", "a", "1", "0", "0", "0", "0", "", "0"); err == nil || !bytes.HasPrefix([]byte(err.Error()), []byte("TRYAGAIN")) {
		t.Fatalf("a write during a rebuild: %v", err)
	}
	if m, _ := e.RebuildMark(ctx); m != "r1" {
		t.Fatalf("mark %q", m)
	}
	// A readiness check that began before the rebuild (the child's guard
	// found the Redis wiped and merged its own ops back meanwhile) cannot
	// make it writable in the rebuild's middle: writes there would build on
	// a half-copied state (an increment's run would restart from zero).
	if err := e.MarkReady(ctx); !errors.Is(err, ErrRebuilding) {
		t.Fatalf("MarkReady during a rebuild: %v", err)
	}
	if ready, _ := e.Ready(ctx); ready {
		t.Fatal("ready during a rebuild after MarkReady")
	}
	if err := e.EndRebuild(ctx); err != nil {
		t.Fatal(err)
	}
	if m, _ := e.RebuildMark(ctx); m != "" {
		t.Fatalf("mark %q after the end", m)
	}
	if err := e.MarkReady(ctx); err != nil {
		t.Fatal(err)
	}
	if ready, _ := e.Ready(ctx); !ready {
		t.Fatal("not ready after the rebuild ended and MarkReady")
	}
}

// FuzzDecodeRecords: the decoder never panics, and what it decodes encodes
// back to the bytes it consumed.
func FuzzDecodeRecords(f *testing.F) {
	r := ExportRecord{Key: "k"}
	r.Slots[0] = Slot{Dump: []byte("dump"), ExpireAt: 1234}
	r.Slots[5] = Slot{Dump: []byte{0, 1, 2}, ExpireAt: -1}
	f.Add(AppendRecord(nil, &r))
	f.Add([]byte{1, 'a', 0, 0, 0, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x7f})
	f.Fuzz(func(t *testing.T, data []byte) {
		recs, used, err := DecodeRecords(data)
		if used > len(data) {
			t.Fatalf("used %d of %d", used, len(data))
		}
		var again []byte
		for i := range recs {
			again = AppendRecord(again, &recs[i])
		}
		if err == nil && !bytes.Equal(again, data[:used]) {
			// varints have one canonical encoding; a non-canonical one
			// decodes but encodes shorter
			if len(again) > used {
				t.Fatalf("re-encoding grew: %d > %d", len(again), used)
			}
		}
	})
}
