package main

import (
	"context"
	"testing"

	"github.com/globalreplica/globalreplica/manager"
)

// TestRunCollectsTombstones: the control loop writes the collection floor
// from the children's heartbeats, and the children collect the tombstones
// below it (a deleted key leaves state in database 1 until then).
func TestRunCollectsTombstones(t *testing.T) {
	c, mgr := newCLI(t)
	ctx := context.Background()
	c.ok("instance", "create")
	sgp, fra := startChild(t, mgr, "sgp"), startChild(t, mgr, "fra")
	c.ok("region", "add", "sgp", "--region-nats", sgp.nats.URL(), "--redis", sgp.d.Engine.Redis().Options().Addr)
	c.ok("region", "add", "fra", "--region-nats", fra.nats.URL(), "--redis", fra.d.Engine.Redis().Options().Addr)
	for _, k := range []string{"a", "b", "c"} {
		if err := sgp.c.HSet(ctx, k, "f", "v").Err(); err != nil {
			t.Fatal(err)
		}
		if err := sgp.c.Del(ctx, k).Err(); err != nil {
			t.Fatal(err)
		}
	}
	if err := fra.c.Set(ctx, "x", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	waitGet(t, sgp.c, "x", "1")
	tombstones := func(r *region) int {
		keys, err := r.d.Engine.Redis().Do(ctx, "EVAL", "redis.call('SELECT', 1) return #redis.call('KEYS', 'h:*')", 0).Int()
		if err != nil {
			t.Fatal(err)
		}
		return keys
	}
	eventually(t, "fra applied the deletes (tombstones in both regions)", func() bool {
		return tombstones(sgp) == 3 && tombstones(fra) == 3
	})
	eventually(t, "the loop wrote a floor covering the deletes and the children collected", func() bool {
		var f manager.Floor
		c.json(&f, "run", "--once")
		return tombstones(sgp) == 0 && tombstones(fra) == 0
	})
	if v, _ := fra.c.Get(ctx, "x").Result(); v != "1" {
		t.Fatalf("live data after collection: x = %q", v)
	}
}
