package channel

import (
	"context"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/globalreplica/globalreplica/child"
	"github.com/globalreplica/globalreplica/internal/testnats"
	"github.com/globalreplica/globalreplica/internal/testredis"
)

// TestRestoreAfterLaggingFailover: a region's Redis master fails over to a
// replica that missed the newest ops the master had already shipped. The
// restore raises the sequence past the stream, so the next local write gets
// a fresh OpID (never one the stream holds), and merges the missed own ops
// back from the stream: the promoted replica ends with the master's state.
func TestRestoreAfterLaggingFailover(t *testing.T) {
	ctx := context.Background()
	master := testredis.Start(t)
	replica := testredis.Start(t, testredis.WithReplicaOf(master.Addr()))
	ns := testnats.Start(t, "sgp")
	_, js := ns.Connect()
	eng, err := child.NewEngine(ctx, child.EngineConfig{Instance: instance, Region: "sgp"}, master.Client(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = eng.Close() }()
	if err := eng.MarkReady(ctx); err != nil {
		t.Fatal(err)
	}
	runNode := func(e Engine) (stop func()) {
		node, err := NewNode(NodeConfig{Stream: StreamConfig{Instance: instance, Region: "sgp"}, Owner: "o"}, e, js, NewMetrics(prometheus.NewRegistry()), testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		c, cancel := context.WithCancel(ctx)
		done := make(chan error, 1)
		go func() { done <- node.Run(c) }()
		return func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("node: %v", err)
			}
		}
	}
	stop := runNode(eng)
	write := func(e *child.Engine, n int, tag string) {
		for i := 0; i < n; i++ {
			if _, err := e.Write(ctx, "incrby", "hits", "1"); err != nil {
				t.Fatal(err)
			}
			if _, err := e.Write(ctx, "hset", "h", fmt.Sprintf("f%d", i%5), tag); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(eng, 50, "a")
	waitFor(t, 10*time.Second, "replica caught up", func() bool {
		v, _ := replica.Client().Get(ctx, "hits").Result()
		p, _ := eng.Position(ctx)
		return v != "" && p.Seq == 100
	})
	// the replica stops following: from here it lags
	if err := replica.Client().ReplicaOf(ctx, "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	write(eng, 40, "b") // shipped by the master, never seen by the replica
	waitFor(t, 10*time.Second, "master shipped everything", func() bool {
		n, _ := eng.LogLen(ctx)
		return n == 0
	})
	want, err := eng.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stop()

	// failover: the replica is the region's Redis now
	promoted, err := child.NewEngine(ctx, child.EngineConfig{Instance: instance, Region: "sgp"}, replica.Client(), testLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = promoted.Close() }()
	if _, err := promoted.Write(ctx, "incrby", "hits", "1"); err == nil || err.Error() != child.ErrNotReady.Error() {
		t.Fatalf("a promoted replica must refuse writes until restored, got %v", err)
	}
	before, _ := promoted.Position(ctx)
	if before.Seq >= 180 {
		t.Fatalf("the replica did not lag (seq %d)", before.Seq)
	}
	n, err := RestoreFromStream(ctx, js, promoted, instance, "sgp")
	if err != nil {
		t.Fatal(err)
	}
	after, _ := promoted.Position(ctx)
	if after.Seq != 180 || uint64(n) != 180-before.Seq {
		t.Fatalf("restore merged %d ops, seq %d -> %d; want seq 180", n, before.Seq, after.Seq)
	}
	if err := promoted.MarkReady(ctx); err != nil {
		t.Fatal(err)
	}
	got, err := promoted.Dump(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("promoted replica after restore:\n%v\nmaster before the failure:\n%v", got, want)
	}
	// the region goes on: new ops get fresh OpIDs and ship
	stop = runNode(promoted)
	defer stop()
	write(promoted, 10, "c")
	waitFor(t, 10*time.Second, "the promoted replica shipped its new ops", func() bool {
		n, _ := promoted.LogLen(ctx)
		return n == 0
	})
	c := &cluster{t: t, regions: []*region{{name: "sgp", js: js}}}
	ops := c.streamOps(c.regions[0]) // stream seq == op seq: no OpID twice
	if len(ops) != 200 {
		t.Fatalf("stream holds %d ops, want 200", len(ops))
	}
	if v, _, _ := promoted.Get(ctx, "hits"); v != "100" {
		t.Fatalf("hits = %s, want 100 (every increment once)", v)
	}
}
