package main

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/channel"
	"github.com/globalreplica/globalreplica/internal/daemon"
	"github.com/globalreplica/globalreplica/internal/testnats"
	"github.com/globalreplica/globalreplica/internal/testredis"
	"github.com/globalreplica/globalreplica/manager"
)

// region is a running region child connected to the config store.
type region struct {
	name string
	nats *testnats.Server
	d    *daemon.Daemon
	c    *redis.Client
	stop func() // stops the child (once; the test's cleanup does it too)
}

// startChild starts the child of region name: its own NATS (with the
// same credentials as the config store's) and redis-server, taking its
// channels from the config store at mgr.
func startChild(t *testing.T, mgr *testnats.Server, name string) *region {
	t.Helper()
	return startChildWith(t, mgr, name, nil)
}

// startChildWith is startChild with a change to the child's config.
func startChildWith(t *testing.T, mgr *testnats.Server, name string, change func(*daemon.Config)) *region {
	t.Helper()
	ch := &region{name: name, nats: testnats.StartAuth(t, name, "gr", "secret")}
	cfg := daemon.Config{
		Instance: "shop", Region: name, Listen: "127.0.0.1:0",
		Redis: *testredis.Start(t).Options(),
		NATS:  daemon.NATS{URL: ch.nats.URL(), User: "gr", Password: "secret"},
		Manager: daemon.ManagerConfig{
			NATS:      daemon.NATS{URL: mgr.URL(), User: "gr", Password: "secret"},
			Heartbeat: 100 * time.Millisecond, Retry: 100 * time.Millisecond,
			GCEvery: 100 * time.Millisecond, // collect at each new floor, as tests expect
		},
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	}
	if change != nil {
		change(&cfg)
	}
	d, err := daemon.Start(context.Background(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	ch.d = d
	// A generous read timeout: some tests pipeline large writes (50,000
	// hash fields) that a loaded machine with -race takes seconds to apply.
	ch.c = redis.NewClient(&redis.Options{Addr: d.RESPAddr(), ReadTimeout: 30 * time.Second})
	var once sync.Once
	ch.stop = func() {
		once.Do(func() {
			_ = ch.c.Close()
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s stopped with %v", name, err)
			}
		})
	}
	t.Cleanup(ch.stop)
	return ch
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(25 * time.Millisecond)
	}
}

func waitGet(t *testing.T, c *redis.Client, key, want string) {
	t.Helper()
	eventually(t, key+" = "+want, func() bool {
		v, _ := c.Get(context.Background(), key).Result()
		return v == want
	})
}

// status returns the status of the channel origin -> dest through the CLI.
func (c *cli) status(origin, dest string) manager.ChannelStatus {
	c.t.Helper()
	var sts []manager.ChannelStatus
	c.json(&sts, "channel", "status", origin, dest)
	if len(sts) != 1 || sts[0].Origin != origin || sts[0].Dest != dest {
		c.t.Fatalf("status %s %s = %+v", origin, dest, sts)
	}
	return sts[0]
}

// TestChannelsWithChildren: regions added through the CLI while their
// children run get channels both ways and data flows; pause, resume and
// throttle through the CLI change the running receivers; channel status
// shows what the heartbeats report.
func TestChannelsWithChildren(t *testing.T) {
	c, mgr := newCLI(t)
	ctx := context.Background()
	c.ok("instance", "create")
	sgp, fra := startChild(t, mgr, "sgp"), startChild(t, mgr, "fra")

	// A region without children yet: its channels' state is unknown.
	c.ok("region", "add", "sgp", "--region-nats", sgp.nats.URL(), "--redis", sgp.d.Engine.Redis().Options().Addr)
	c.ok("region", "add", "lon", "--region-nats", "nats://127.0.0.1:1", "--redis", "127.0.0.1:1")
	if st := c.status("sgp", "lon"); st.State != manager.StateUnknown || !strings.Contains(st.Reason, "no fresh heartbeat") {
		t.Fatalf("status sgp lon = %+v", st)
	}
	c.ok("region", "remove", "lon")

	c.ok("region", "add", "fra", "--region-nats", fra.nats.URL(), "--redis", fra.d.Engine.Redis().Options().Addr)
	if err := sgp.c.Set(ctx, "k", "from-sgp", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := fra.c.IncrBy(ctx, "n", 5).Err(); err != nil {
		t.Fatal(err)
	}
	waitGet(t, fra.c, "k", "from-sgp")
	waitGet(t, sgp.c, "n", "5")

	// Heartbeats show up in channel status.
	eventually(t, "status running with the applied sequence", func() bool {
		st := c.status("sgp", "fra")
		return st.State == channel.StateRunning && st.AppliedSeq == 1 && st.OriginSeq == 1 && st.LagOps == 0 && st.Child != "" && st.HeartbeatAge >= 0
	})
	var all []manager.ChannelStatus
	c.json(&all, "channel", "status")
	if len(all) != 2 || all[0].Origin != "fra" || all[1].Origin != "sgp" {
		t.Fatalf("status = %+v", all)
	}
	table := c.ok("channel", "status")
	if !strings.HasPrefix(table, "ORIGIN") || !strings.Contains(table, "running") {
		t.Fatalf("status table:\n%s", table)
	}
	var regions []regionView
	c.json(&regions, "region", "list")
	if len(regions) != 2 || regions[0].Children != 1 || regions[1].Children != 1 {
		t.Fatalf("region list = %+v", regions)
	}

	// Pause: the receiver stops, status says so, writes wait.
	var cv channelView
	c.json(&cv, "channel", "pause", "sgp", "fra")
	if !cv.Paused || cv.Origin != "sgp" || cv.Dest != "fra" {
		t.Fatalf("pause = %+v", cv)
	}
	eventually(t, "status paused", func() bool { return c.status("sgp", "fra").State == channel.StatePaused })
	for range 5 {
		if err := sgp.c.Incr(ctx, "paused-writes").Err(); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, "lag of 5 ops while paused", func() bool {
		st := c.status("sgp", "fra")
		return st.State == channel.StatePaused && st.Paused && st.LagOps == 5 && st.OriginSeq == 6
	})
	if v, _ := fra.c.Get(ctx, "paused-writes").Result(); v != "" {
		t.Fatalf("applied while paused: %q", v)
	}
	// The other direction keeps flowing.
	if err := fra.c.Set(ctx, "other-way", "yes", 0).Err(); err != nil {
		t.Fatal(err)
	}
	waitGet(t, sgp.c, "other-way", "yes")

	// Resume catches up.
	c.json(&cv, "channel", "resume", "sgp", "fra")
	if cv.Paused {
		t.Fatalf("resume = %+v", cv)
	}
	waitGet(t, fra.c, "paused-writes", "5")
	eventually(t, "status running, no lag", func() bool {
		st := c.status("sgp", "fra")
		return st.State == channel.StateRunning && st.LagOps == 0 && st.AppliedSeq == 6
	})

	// Throttle reaches the receiver; a limit not given stays.
	c.json(&cv, "channel", "throttle", "sgp", "fra", "--ops", "200", "--bytes", "1000000")
	if cv.OpsPerSec != 200 || cv.BytesPerSec != 1e6 {
		t.Fatalf("throttle = %+v", cv)
	}
	c.json(&cv, "channel", "throttle", "sgp", "fra", "--ops", "100")
	if cv.OpsPerSec != 100 || cv.BytesPerSec != 1e6 {
		t.Fatalf("throttle --ops only = %+v", cv)
	}
	eventually(t, "receiver throttled", func() bool {
		st := fra.d.Statuses()
		return len(st) == 1 && st[0].OpsPerSec == 100 && st[0].BytesPerSec == 1e6
	})
	if st := c.status("sgp", "fra"); st.OpsPerSec != 100 || st.BytesPerSec != 1e6 {
		t.Fatalf("status after throttle = %+v", st)
	}
	var list []channelView
	c.json(&list, "channel", "list")
	if len(list) != 2 || list[1] != (channelView{Origin: "sgp", Dest: "fra", OpsPerSec: 100, BytesPerSec: 1e6}) {
		t.Fatalf("channel list = %+v", list)
	}
	c.ok("channel", "throttle", "sgp", "fra", "--ops", "0", "--bytes", "0")

	// Delete and create again: the receiver goes and comes back, and
	// catches up from the applied vector.
	var deleted map[string]channelView
	c.json(&deleted, "channel", "delete", "sgp", "fra")
	if deleted["deleted"] != (channelView{Origin: "sgp", Dest: "fra"}) {
		t.Fatalf("delete = %+v", deleted)
	}
	eventually(t, "receiver gone", func() bool { return len(fra.d.Statuses()) == 0 })
	c.fails(exitNotFound, "no such channel", "channel", "status", "sgp", "fra")
	c.fails(exitNotFound, "no such channel", "channel", "delete", "sgp", "fra")
	if err := sgp.c.Set(ctx, "k", "while-deleted", 0).Err(); err != nil {
		t.Fatal(err)
	}
	c.json(&cv, "channel", "create", "sgp", "fra")
	waitGet(t, fra.c, "k", "while-deleted")
}
