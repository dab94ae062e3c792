package daemon

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/globalreplica/globalreplica/channel"
	"github.com/globalreplica/globalreplica/internal/testnats"
	"github.com/globalreplica/globalreplica/internal/testredis"
	"github.com/globalreplica/globalreplica/manager"
)

// managedRegion is a region child that takes its channels from a channel
// manager's config store.
type managedRegion struct {
	name string
	nats *testnats.Server
	d    *Daemon
	c    *redis.Client
}

// startManaged starts a region child (its own NATS with credentials, its
// own redis-server) connected to the config store at mgr.
func startManaged(t *testing.T, mgr *testnats.Server, name string) *managedRegion {
	t.Helper()
	return startManagedOn(t, mgr, name, testnats.StartAuth(t, name, "gr", "secret"), *testredis.Start(t).Options())
}

// waitFor polls cond until it holds or 10 s pass.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// inbound returns the origins of a child's running channels and their
// states, "sgp=running fra=paused".
func inbound(d *Daemon) string {
	var out []string
	for _, st := range d.Statuses() {
		out = append(out, st.Origin+"="+st.State)
	}
	return strings.Join(out, " ")
}

// TestManagedChannels: children follow the desired state live: channels
// appear when regions are added (connecting to the origin's NATS with the
// child's credentials), pause, resume and throttle apply to the running
// receiver, deleted channels and evicted regions stop, and a deleted
// instance stops everything. Heartbeats reach the store.
func TestManagedChannels(t *testing.T) {
	mgr := testnats.StartAuth(t, "mgr", "gr", "secret")
	_, js := mgr.Connect()
	ctx := context.Background()
	s, err := manager.Open(ctx, js, "shop")
	if err != nil {
		t.Fatal(err)
	}
	// Children start before the instance exists and wait for it.
	sgp, fra := startManaged(t, mgr, "sgp"), startManaged(t, mgr, "fra")
	if _, err := s.CreateInstance(ctx, manager.Instance{}); err != nil {
		t.Fatal(err)
	}
	for _, r := range []*managedRegion{sgp, fra} {
		if _, _, err := s.AddRegion(ctx, manager.Region{ID: r.name, NATS: r.nats.URL(), Redis: "unused:6379"}); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, "channels both ways", func() bool {
		return inbound(fra.d) == "sgp=running" && inbound(sgp.d) == "fra=running"
	})
	if err := sgp.c.Set(ctx, "k", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := fra.c.IncrBy(ctx, "n", 2).Err(); err != nil {
		t.Fatal(err)
	}
	waitValue(t, fra.c, "k", "1")
	waitValue(t, sgp.c, "n", "2")

	// Pause and throttle reach the running receiver.
	if _, err := s.PauseChannel(ctx, "sgp", "fra"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.ThrottleChannel(ctx, "sgp", "fra", 500, 1e6); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "paused and throttled", func() bool {
		st := fra.d.Statuses()
		return len(st) == 1 && st[0].State == channel.StatePaused && st[0].OpsPerSec == 500 && st[0].BytesPerSec == 1e6
	})
	if err := sgp.c.Set(ctx, "k", "2", 0).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if v, _ := fra.c.Get(ctx, "k").Result(); v != "1" {
		t.Fatalf("applied while paused: k = %q", v)
	}
	if _, err := s.ResumeChannel(ctx, "sgp", "fra"); err != nil {
		t.Fatal(err)
	}
	waitValue(t, fra.c, "k", "2")

	// Heartbeats: both children, with their positions and channels.
	waitFor(t, "heartbeats", func() bool {
		beats, err := s.Heartbeats(ctx)
		if err != nil || len(beats) != 2 {
			return false
		}
		f := beats[0] // fra sorts first
		return f.Region == "fra" && f.Owner == fra.d.cfg.Owner && f.Seq == 1 && f.Applied["sgp"] == 2 &&
			len(f.Channels) == 1 && f.Channels[0].State == channel.StateRunning && f.Channels[0].OpsPerSec == 500
	})

	// A deleted channel stops; created again, it catches up from the
	// applied vector.
	if err := s.DeleteChannel(ctx, "sgp", "fra"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "channel sgp->fra gone", func() bool { return inbound(fra.d) == "" })
	// ... and its durable consumer with it, from sgp's stream.
	_, sjs := sgp.nats.Connect()
	stream, err := sjs.Stream(ctx, channel.StreamName("shop", "sgp"))
	if err != nil {
		t.Fatal(err)
	}
	waitFor(t, "the consumer of sgp->fra deleted from sgp's stream", func() bool {
		info, err := stream.Info(ctx)
		return err == nil && info.State.Consumers == 0
	})
	if err := sgp.c.Set(ctx, "k", "3", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateChannel(ctx, manager.Channel{Origin: "sgp", Dest: "fra"}); err != nil {
		t.Fatal(err)
	}
	waitValue(t, fra.c, "k", "3")

	// Evicting sgp stops every channel from and to it.
	if _, _, err := s.EvictRegion(ctx, "sgp"); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "channels of an evicted region gone", func() bool { return inbound(fra.d) == "" && inbound(sgp.d) == "" })

	// Deleting the instance stops what is left.
	if _, err := s.UpdateRegion(ctx, "sgp", func(r *manager.Region) error { r.Evicted = false; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateChannel(ctx, manager.Channel{Origin: "sgp", Dest: "fra"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "channel back", func() bool { return inbound(fra.d) == "sgp=running" })
	if err := s.DeleteInstance(ctx, true); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "channels of a deleted instance gone", func() bool { return inbound(fra.d) == "" })
}

// TestManagerConfig: static peers and a manager exclude each other; a
// manager needs the region's own NATS.
func TestManagerConfig(t *testing.T) {
	base := func() Config {
		return Config{Instance: "shop", Region: "sgp", NATS: NATS{URL: "nats://127.0.0.1:1"}, Manager: ManagerConfig{NATS: NATS{URL: "nats://127.0.0.1:2"}}}
	}
	c := base()
	c.Peers = []Peer{{Region: "fra", NATS: NATS{URL: "nats://127.0.0.1:3"}}}
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "exclude each other") {
		t.Fatalf("peers and manager: %v", err)
	}
	c = base()
	c.NATS.URL = ""
	if err := c.validate(); err == nil || !strings.Contains(err.Error(), "own NATS") {
		t.Fatalf("manager without own NATS: %v", err)
	}
	c = base()
	if err := c.validate(); err != nil || c.Manager.Heartbeat != manager.HeartbeatInterval || c.Manager.Retry != DefaultManagerRetry {
		t.Fatalf("defaults: %+v %v", c.Manager, err)
	}
}

// inboundFake records the controls control applies.
type inboundFake struct{ calls []string }

func (f *inboundFake) Pause()  { f.calls = append(f.calls, "pause") }
func (f *inboundFake) Resume() { f.calls = append(f.calls, "resume") }
func (f *inboundFake) SetThrottle(ops, bytes float64) {
	f.calls = append(f.calls, "throttle")
}

func TestControl(t *testing.T) {
	tests := []struct {
		was, want manager.Inbound
		calls     string
	}{
		{manager.Inbound{}, manager.Inbound{}, ""},
		{manager.Inbound{}, manager.Inbound{Paused: true}, "pause"},
		{manager.Inbound{Paused: true}, manager.Inbound{}, "resume"},
		{manager.Inbound{}, manager.Inbound{OpsPerSec: 1}, "throttle"},
		{manager.Inbound{BytesPerSec: 1}, manager.Inbound{Paused: true}, "throttle pause"},
	}
	for _, tc := range tests {
		f := &inboundFake{}
		control(f, tc.was, tc.want)
		if got := strings.Join(f.calls, " "); got != tc.calls {
			t.Errorf("%+v -> %+v: %q, want %q", tc.was, tc.want, got, tc.calls)
		}
	}
}

// TestGCDue: a collection scans the whole keyspace, so a child starts one
// only for a floor newer than the last it collected and at most once per
// GCEvery, however often the manager publishes floors.
func TestGCDue(t *testing.T) {
	t0 := time.Date(2026, 11, 27, 12, 0, 0, 0, time.UTC)
	m := &managed{cfg: ManagerConfig{GCEvery: time.Minute}, gcAt: t0, gcRan: t0}
	newer := &manager.Floor{At: t0.Add(5 * time.Second)}
	for _, c := range []struct {
		name  string
		floor *manager.Floor
		now   time.Time
		want  bool
	}{
		{"no floor", nil, t0.Add(time.Hour), false},
		{"same floor", &manager.Floor{At: t0}, t0.Add(time.Hour), false},
		{"newer floor, 5 s after the last collection", newer, t0.Add(5 * time.Second), false},
		{"newer floor, 59 s after", newer, t0.Add(59 * time.Second), false},
		{"newer floor, a minute after", newer, t0.Add(time.Minute), true},
	} {
		if got := m.gcDue(c.floor, c.now); got != c.want {
			t.Errorf("%s: due %v, want %v", c.name, got, c.want)
		}
	}
	var cfg ManagerConfig
	cfg.NATS.URL = "nats://127.0.0.1:1"
	if err := cfg.validate(&Config{NATS: NATS{URL: "nats://127.0.0.1:2"}}); err != nil || cfg.GCEvery != DefaultGCEvery {
		t.Fatalf("default GCEvery %v (%v), want %v", cfg.GCEvery, err, DefaultGCEvery)
	}
}
