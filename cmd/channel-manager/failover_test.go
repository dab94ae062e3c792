package main

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/globalreplica/globalreplica/internal/daemon"
	"github.com/globalreplica/globalreplica/internal/testredis"
	"github.com/globalreplica/globalreplica/internal/workload"
)

// replInfo returns the INFO replication fields of a Redis.
func replInfo(c *redis.Client) map[string]string {
	out := map[string]string{}
	s, err := c.Info(context.Background(), "replication").Result()
	if err != nil {
		return out
	}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			out[k] = v
		}
	}
	return out
}

// TestFailoverCommand: `failover` refuses a region without replica (exit
// 2) and unknown regions (exit 3); on a region whose master answers it
// swaps the desired state, the child fences and demotes the old master,
// serves writes on the new one and the command reports it; increments made
// throughout are neither lost nor doubled, and verify passes. Then the new
// master dies and `run` fails the region back over on its own.
func TestFailoverCommand(t *testing.T) {
	c, mgr := newCLI(t)
	ctx := context.Background()
	c.ok("instance", "create")
	master := testredis.Start(t)
	replica := master.StartReplica(t)
	sgp := startChildWith(t, mgr, "sgp", func(cfg *daemon.Config) { cfg.Redis = *master.Options() })
	fra := startChild(t, mgr, "fra")
	c.ok("region", "add", "sgp", "--region-nats", sgp.nats.URL(), "--redis", master.Addr(), "--replica", replica.Addr())
	c.ok("region", "add", "fra", "--region-nats", fra.nats.URL(), "--redis", fra.d.Engine.Addr())

	c.fails(exitUsage, "has no replica", "failover", "fra")
	c.fails(exitNotFound, "no such region", "failover", "nope")
	c.fails(exitUsage, "region id", "failover", "Bad_Id")
	c.fails(exitUsage, "wants 1 argument", "failover")
	var regions []regionView
	c.json(&regions, "region", "list")
	if len(regions) != 2 || regions[0].ID != "fra" || regions[0].Redis != fra.d.Engine.Addr() || regions[1].Redis != master.Addr() {
		t.Fatalf("a refused failover changed the regions: %+v", regions)
	}

	eventually(t, "channels both ways", func() bool { return len(sgp.d.Statuses()) == 1 && len(fra.d.Statuses()) == 1 })
	w := workload.StartIncrementer(sgp.c, "n", 2*time.Millisecond)
	time.Sleep(500 * time.Millisecond)
	var v failoverView
	c.json(&v, "failover", "sgp", "--timeout", "30s")
	if v.Region != "sgp" || v.Master != replica.Addr() || v.Replica != master.Addr() || !v.Waited || !v.Serving || v.Child == "" || v.Took == "" {
		t.Fatalf("failover = %+v", v)
	}
	time.Sleep(500 * time.Millisecond)
	tally := w.Halt()
	acked, ambiguous, refused := tally.Acked, tally.Ambiguous, tally.Refused
	t.Logf("increments on sgp during the failover: %d acknowledged, %d refused, %d ambiguous; failover took %s", acked, refused, ambiguous, v.Took)
	if sgp.d.Engine.Addr() != replica.Addr() {
		t.Fatalf("the child uses %s", sgp.d.Engine.Addr())
	}
	info := replInfo(master.Client())
	if info["role"] != "slave" || info["master_port"] != fmt.Sprint(replica.Port) {
		t.Fatalf("the old master was not demoted: %v", info)
	}
	if err := fra.c.IncrBy(ctx, "n", 1000).Err(); err != nil {
		t.Fatal(err)
	}
	eventually(t, "n converged", func() bool {
		a, _ := sgp.c.Get(ctx, "n").Int()
		b, _ := fra.c.Get(ctx, "n").Int()
		return a == b && a >= acked+1000
	})
	n, _ := sgp.c.Get(ctx, "n").Int()
	if n < acked+1000 || n > acked+ambiguous+1000 {
		t.Fatalf("n = %d after %d acknowledged (+%d ambiguous) increments and 1000 from fra", n, acked, ambiguous)
	}
	eventually(t, "verify passes", func() bool { _, _, code := c.run("verify"); return code == exitOK })

	// The new master dies; the control loop fails sgp back to the old
	// master, which has replicated everything since.
	replica.Kill()
	var out string
	eventually(t, "run fails sgp over", func() bool {
		out = c.ok("run", "--once", "--failover-after", "500ms")
		return strings.Contains(out, "failover of sgp")
	})
	if !strings.Contains(out, "master "+master.Addr()) {
		t.Fatalf("run: %s", out)
	}
	eventually(t, "writes on the old master again", func() bool {
		return sgp.c.IncrBy(ctx, "n", 1).Err() == nil
	})
	if sgp.d.Engine.Addr() != master.Addr() {
		t.Fatalf("the child uses %s after failing back", sgp.d.Engine.Addr())
	}
	waitGet(t, fra.c, "n", fmt.Sprint(n+1))
}
