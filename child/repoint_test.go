package child

import (
	"context"
	"testing"
	"time"

	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/internal/testredis"
)

// TestRepoint: after Repoint every path of the engine (the lanes, direct
// calls, the op log, reads through Redis()) reaches the new Redis, and the
// old one is no longer written.
func TestRepoint(t *testing.T) {
	ctx := context.Background()
	master := testredis.Start(t)
	replica := master.StartReplica(t)
	e, err := NewEngine(ctx, EngineConfig{Instance: "test", Region: "sgp"}, master.Client(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = e.Close() }()
	if err := e.MarkReady(ctx); err != nil {
		t.Fatal(err)
	}
	reads := e.Redis() // a client taken before the repoint follows it
	for range 3 {
		if _, err := e.Write(ctx, "incrby", "n", "1"); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for replica.Client().Exists(ctx, "n").Val() != 1 {
		if time.Now().After(deadline) {
			t.Fatal("replica did not sync")
		}
		time.Sleep(10 * time.Millisecond)
	}
	if err := e.Repoint(ctx, "not-an-address"); err == nil {
		t.Fatal("Repoint to a bad address succeeded")
	}
	if err := replica.Client().Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	if err := e.Repoint(ctx, replica.Addr()); err != nil {
		t.Fatal(err)
	}
	if e.Addr() != replica.Addr() {
		t.Fatalf("Addr = %s, want %s", e.Addr(), replica.Addr())
	}
	// The promoted replica carries the old master's ready mark, which
	// names another process: writes wait for the region's check.
	if _, err := e.Write(ctx, "incrby", "n", "1"); err == nil || err.Error() != ErrNotReady.Error() {
		t.Fatalf("write before the check: %v, want TRYAGAIN", err)
	}
	if err := e.MarkReady(ctx); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Write(ctx, "incrby", "n", "1"); err != nil {
		t.Fatal(err)
	}
	got, _, err := e.Get(ctx, "n")
	if err != nil || got != "4" {
		t.Fatalf("n = %q, %v after the repoint", got, err)
	}
	pos, err := e.Position(ctx)
	if err != nil || pos.Seq != 4 {
		t.Fatalf("position %+v, %v: want seq 4", pos, err)
	}
	if n, err := e.LogLen(ctx); err != nil || n != 4 {
		t.Fatalf("op log: %d, %v; want 4 ops", n, err)
	}
	if n, err := reads.Exists(ctx, "n").Result(); err != nil || n != 1 {
		t.Fatalf("Redis() after the repoint: %d, %v", n, err)
	}
	pipe := reads.Pipeline()
	ex := pipe.Exists(ctx, "n")
	if _, err := pipe.Exec(ctx); err != nil || ex.Val() != 1 {
		t.Fatalf("pipeline through Redis() after the repoint: %d, %v", ex.Val(), err)
	}
	tx := reads.TxPipeline()
	ex = tx.Exists(ctx, "n")
	if _, err := tx.Exec(ctx); err != nil || ex.Val() != 1 {
		t.Fatalf("transaction through Redis() after the repoint: %d, %v", ex.Val(), err)
	}
	// The old master got none of it.
	raw, err := master.Client().Get(ctx, "n").Result()
	if err != nil {
		t.Fatal(err)
	}
	if s, _, _ := decodeString("n", raw); s != "3" {
		t.Fatalf("old master's n = %q, want 3 (untouched)", s)
	}
}
