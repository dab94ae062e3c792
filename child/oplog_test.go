package child

import (
	"context"
	"testing"

	"github.com/globalreplica/globalreplica/crdt"
)

// TestTrimLogBySequence: the shipper trims the op log up to the last
// sequence the stream acknowledged. Ops that took the places of shipped
// ones while they were in flight (the Redis was wiped and the region's
// sequence restored past its stream) are not shipped and must stay.
func TestTrimLogBySequence(t *testing.T) {
	ctx := context.Background()
	e := newTestEngine(t, "sgp")
	for range 5 {
		if _, err := e.Write(ctx, "incrby", "n", "1"); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := e.TrimLog(ctx, 2); err != nil || n != 2 {
		t.Fatalf("trim up to 2 of ops 1-5: removed %d, %v", n, err)
	}
	raw, err := e.ReadLog(ctx, 10)
	if err != nil || len(raw) != 3 || lastSeq(t, raw[:1]) != 3 {
		t.Fatalf("log after trimming up to 2: %d ops, head %d, %v", len(raw), lastSeq(t, raw[:1]), err)
	}
	// ops 3-5 are in flight to the stream when the Redis is wiped; the
	// region restores its sequence past the stream (5) and writes ops 6-7
	if err := e.rdb.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Restore(ctx, 5, crdt.Timestamp{}, nil); err != nil {
		t.Fatal(err)
	}
	if err := e.MarkReady(ctx); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if _, err := e.Write(ctx, "incrby", "n", "1"); err != nil {
			t.Fatal(err)
		}
	}
	// the stream acknowledges 3-5: nothing of the new log goes
	if n, err := e.TrimLog(ctx, 5); err != nil || n != 0 {
		t.Fatalf("trim up to 5 of ops 6-7: removed %d, %v", n, err)
	}
	raw, err = e.ReadLog(ctx, 10)
	if err != nil || len(raw) != 2 || lastSeq(t, raw) != 7 {
		t.Fatalf("log after the wipe: %d ops up to %d, %v; want ops 6-7", len(raw), lastSeq(t, raw), err)
	}
	if n, err := e.TrimLog(ctx, 7); err != nil || n != 2 {
		t.Fatalf("trim up to 7: removed %d, %v", n, err)
	}
	if n, err := e.LogLen(ctx); err != nil || n != 0 {
		t.Fatalf("log left: %d, %v", n, err)
	}
}
