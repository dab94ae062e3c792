package child

import (
	"context"
	"fmt"
	"testing"

	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/internal/testredis"
)

// TestFastApplyMin: batches smaller than FastApplyMin go to gr_apply as they
// are (one round trip, for a channel in step with its origin); larger ones
// take the fast path, and both leave the same values.
func TestFastApplyMin(t *testing.T) {
	ctx := context.Background()
	src := newTestEngine(t, "sgp")
	dst, err := NewEngine(ctx, EngineConfig{Instance: "test", Region: "fra"}, testredis.Start(t).Client(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dst.Close() })
	if err := dst.MarkReady(ctx); err != nil {
		t.Fatal(err)
	}
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
