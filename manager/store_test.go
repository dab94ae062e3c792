package manager

import (
	"context"
	"encoding/json"
	"errors"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/channel"
	"github.com/globalreplica/globalreplica/internal/testnats"
)

// openStore starts a NATS server and opens the store of instance "shop"
// on it, with the instance created.
func openStore(t *testing.T) (*Store, jetstream.JetStream) {
	t.Helper()
	srv := testnats.Start(t, "mgr")
	_, js := srv.Connect()
	ctx := context.Background()
	s, err := Open(ctx, js, "shop", WithLogger(zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.CreateInstance(ctx, Instance{}); err != nil {
		t.Fatal(err)
	}
	return s, js
}

func addRegions(t *testing.T, s *Store, ids ...string) {
	t.Helper()
	for _, id := range ids {
		if _, _, err := s.AddRegion(context.Background(), Region{ID: id, NATS: "nats://" + id + ":4222", Redis: id + ":6379"}); err != nil {
			t.Fatal(err)
		}
	}
}

func channelKeys(cs []Channel) string {
	var out []string
	for _, c := range cs {
		out = append(out, c.Origin+">"+c.Dest)
	}
	return strings.Join(out, " ")
}

func TestInstanceLifecycle(t *testing.T) {
	s, js := openStore(t)
	ctx := context.Background()
	in, err := s.GetInstance(ctx)
	if err != nil || in.Name != "shop" || in.Retention != DefaultRetention || in.Created.IsZero() {
		t.Fatalf("GetInstance = %+v, %v", in, err)
	}
	if _, err := s.CreateInstance(ctx, Instance{}); !errors.Is(err, ErrInstanceExists) {
		t.Fatalf("second create: %v", err)
	}
	if _, err := Bind(ctx, js, "nope"); !errors.Is(err, ErrNoInstance) {
		t.Fatalf("Bind of a missing instance: %v", err)
	}
	if _, err := Open(ctx, js, "Bad_Name"); !errors.Is(err, ErrInvalid) {
		t.Fatalf("Open with a bad name: %v", err)
	}
	// Open on existing buckets keeps them and their content.
	again, err := Open(ctx, js, "shop", WithReplicas(1))
	if err != nil {
		t.Fatal(err)
	}
	if got, err := again.GetInstance(ctx); err != nil || !got.Created.Equal(in.Created) {
		t.Fatalf("reopened: %+v, %v", got, err)
	}

	up, err := s.UpdateInstance(ctx, func(in *Instance) error { in.Retention = time.Hour; return nil })
	if err != nil || up.Retention != time.Hour || !up.Created.Equal(in.Created) {
		t.Fatalf("UpdateInstance = %+v, %v", up, err)
	}
	if _, err := s.UpdateInstance(ctx, func(in *Instance) error { in.Name = "other"; return nil }); !errors.Is(err, ErrInvalid) {
		t.Fatalf("renaming the instance: %v", err)
	}

	addRegions(t, s, "sgp")
	if err := s.DeleteInstance(ctx, false); !errors.Is(err, ErrInstanceInUse) || !strings.Contains(err.Error(), "sgp") {
		t.Fatalf("delete with regions: %v", err)
	}
	if _, err := s.GetRegion(ctx, "sgp"); err != nil {
		t.Fatalf("refused delete changed something: %v", err)
	}
	if err := s.DeleteInstance(ctx, true); err != nil {
		t.Fatal(err)
	}
	if _, err := Bind(ctx, js, "shop"); !errors.Is(err, ErrNoInstance) {
		t.Fatalf("Bind after delete: %v", err)
	}
}

func TestRegionsAndChannels(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	addRegions(t, s, "sgp")
	r, made, err := s.AddRegion(ctx, Region{ID: "fra", NATS: "nats://fra:4222", Redis: "fra:6379", Replica: "fra2:6379"})
	if err != nil || r.Added.IsZero() || channelKeys(made) != "sgp>fra fra>sgp" {
		t.Fatalf("AddRegion fra = %+v, %v, %v", r, channelKeys(made), err)
	}
	addRegions(t, s, "iad")
	chans, err := s.Channels(ctx)
	if err != nil || channelKeys(chans) != "fra>iad fra>sgp iad>fra iad>sgp sgp>fra sgp>iad" {
		t.Fatalf("Channels = %v, %v", channelKeys(chans), err)
	}

	bad := []struct {
		name string
		r    Region
		want error
	}{
		{"duplicate", Region{ID: "fra", NATS: "n", Redis: "r"}, ErrRegionExists},
		{"invalid id", Region{ID: "Fra!", NATS: "n", Redis: "r"}, ErrInvalid},
		{"no nats", Region{ID: "lon", Redis: "r"}, ErrInvalid},
		{"no redis", Region{ID: "lon", NATS: "n"}, ErrInvalid},
		{"replica is master", Region{ID: "lon", NATS: "n", Redis: "r", Replica: "r"}, ErrInvalid},
	}
	for _, tc := range bad {
		if _, _, err := s.AddRegion(ctx, tc.r); !errors.Is(err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, err, tc.want)
		}
	}
	before, _ := s.Load(ctx)

	if _, err := s.CreateChannel(ctx, Channel{Origin: "fra", Dest: "fra"}); !errors.Is(err, ErrChannelToItself) {
		t.Errorf("channel to itself: %v", err)
	}
	if _, err := s.CreateChannel(ctx, Channel{Origin: "fra", Dest: "lon"}); !errors.Is(err, ErrNoRegion) {
		t.Errorf("channel to an unknown region: %v", err)
	}
	if _, err := s.CreateChannel(ctx, Channel{Origin: "fra", Dest: "sgp"}); !errors.Is(err, ErrChannelExists) {
		t.Errorf("duplicate channel: %v", err)
	}
	if _, err := s.PauseChannel(ctx, "lon", "fra"); !errors.Is(err, ErrNoRegion) {
		t.Errorf("pause from an unknown region: %v", err)
	}
	if _, err := s.ThrottleChannel(ctx, "fra", "sgp", -1, 0); !errors.Is(err, ErrInvalid) {
		t.Errorf("negative throttle: %v", err)
	}
	if err := s.DeleteChannel(ctx, "fra", "fra"); !errors.Is(err, ErrChannelToItself) {
		t.Errorf("delete channel to itself: %v", err)
	}
	if after, _ := s.Load(ctx); after.Revision != before.Revision {
		t.Fatalf("refused operations changed the state: revision %d -> %d", before.Revision, after.Revision)
	}

	c, err := s.PauseChannel(ctx, "sgp", "fra")
	if err != nil || !c.Paused {
		t.Fatalf("pause: %+v %v", c, err)
	}
	if c, err = s.ThrottleChannel(ctx, "sgp", "fra", 100, 1e6); err != nil || c.OpsPerSec != 100 || c.BytesPerSec != 1e6 || !c.Paused {
		t.Fatalf("throttle: %+v %v", c, err)
	}
	if c, err = s.ResumeChannel(ctx, "sgp", "fra"); err != nil || c.Paused || c.OpsPerSec != 100 {
		t.Fatalf("resume: %+v %v", c, err)
	}
	if err := s.DeleteChannel(ctx, "sgp", "fra"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetChannel(ctx, "sgp", "fra"); !errors.Is(err, ErrNoChannel) {
		t.Fatalf("deleted channel: %v", err)
	}
	if _, err := s.CreateChannel(ctx, Channel{Origin: "sgp", Dest: "fra", Paused: true}); err != nil {
		t.Fatal(err)
	}

	// Evict iad: its channels go, it stays listed as evicted, and it cannot
	// get channels or be added again.
	r, gone, err := s.EvictRegion(ctx, "iad")
	if err != nil || !r.Evicted || channelKeys(gone) != "fra>iad iad>fra iad>sgp sgp>iad" {
		t.Fatalf("evict = %+v %v %v", r, channelKeys(gone), err)
	}
	if _, _, err := s.EvictRegion(ctx, "iad"); !errors.Is(err, ErrEvicted) {
		t.Fatalf("second evict: %v", err)
	}
	if _, err := s.CreateChannel(ctx, Channel{Origin: "iad", Dest: "fra"}); !errors.Is(err, ErrEvicted) {
		t.Fatalf("channel from an evicted region: %v", err)
	}
	if _, _, err := s.AddRegion(ctx, Region{ID: "iad", NATS: "n", Redis: "r"}); !errors.Is(err, ErrRegionExists) || !strings.Contains(err.Error(), "evicted") {
		t.Fatalf("adding an evicted region again: %v", err)
	}
	// A region added now gets no channels with the evicted one.
	_, made, err = s.AddRegion(ctx, Region{ID: "lon", NATS: "n", Redis: "r"})
	if err != nil || channelKeys(made) != "fra>lon lon>fra sgp>lon lon>sgp" {
		t.Fatalf("add lon: %v %v", channelKeys(made), err)
	}

	gone, err = s.RemoveRegion(ctx, "lon")
	if err != nil || channelKeys(gone) != "fra>lon lon>fra lon>sgp sgp>lon" {
		t.Fatalf("remove lon: %v %v", channelKeys(gone), err)
	}
	if _, err := s.RemoveRegion(ctx, "lon"); !errors.Is(err, ErrNoRegion) {
		t.Fatalf("second remove: %v", err)
	}
	regions, err := s.Regions(ctx)
	if err != nil || len(regions) != 3 || regions[0].ID != "fra" || regions[0].Replica != "fra2:6379" || !regions[1].Evicted {
		t.Fatalf("regions = %+v, %v", regions, err)
	}
}

// TestRevisionChecks: a write based on a stale read fails with ErrConflict
// and leaves the newer value alone.
func TestRevisionChecks(t *testing.T) {
	s, js := openStore(t)
	ctx := context.Background()
	addRegions(t, s, "sgp", "fra")
	other, err := Bind(ctx, js, "shop")
	if err != nil {
		t.Fatal(err)
	}
	_, err = s.UpdateChannel(ctx, "sgp", "fra", func(c *Channel) error {
		// Another writer changes the channel between our read and write.
		if _, err := other.ThrottleChannel(ctx, "sgp", "fra", 7, 0); err != nil {
			t.Fatal(err)
		}
		c.Paused = true
		return nil
	})
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("stale update: %v", err)
	}
	if c, _ := s.GetChannel(ctx, "sgp", "fra"); c.Paused || c.OpsPerSec != 7 {
		t.Fatalf("the stale write overwrote the newer one: %+v", c)
	}

	f, rev, err := s.Floor(ctx)
	if err != nil || rev != 0 || f.Applied != nil {
		t.Fatalf("Floor before any = %+v %d %v", f, rev, err)
	}
	rev, err = s.PutFloor(ctx, Floor{Applied: map[string]uint64{"sgp": 3}, At: time.Now()}, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutFloor(ctx, Floor{Applied: map[string]uint64{"sgp": 1}}, 0); !errors.Is(err, ErrConflict) {
		t.Fatalf("floor created twice: %v", err)
	}
	if _, err := s.PutFloor(ctx, Floor{Applied: map[string]uint64{"sgp": 4}}, rev); err != nil {
		t.Fatal(err)
	}
	if _, err := s.PutFloor(ctx, Floor{Applied: map[string]uint64{"sgp": 5}}, rev); !errors.Is(err, ErrConflict) {
		t.Fatalf("stale floor: %v", err)
	}
	if f, _, _ := s.Floor(ctx); f.Applied["sgp"] != 4 {
		t.Fatalf("floor = %+v", f)
	}
	if _, err := s.UpdateRegion(ctx, "sgp", func(r *Region) error { r.ID = "xyz"; return nil }); !errors.Is(err, ErrInvalid) {
		t.Fatalf("renaming a region: %v", err)
	}
}

func TestLock(t *testing.T) {
	s, js := openStore(t)
	ctx := context.Background()
	other, err := Bind(ctx, js, "shop")
	if err != nil {
		t.Fatal(err)
	}
	a, err := s.Lock(ctx, "manager-a", "region add fra", time.Second)
	if err != nil {
		t.Fatal(err)
	}
	// Held past its TTL thanks to the renewal.
	time.Sleep(1500 * time.Millisecond)
	_, err = other.Lock(ctx, "manager-b", "channel pause", time.Second)
	if !errors.Is(err, ErrBusy) || !strings.Contains(err.Error(), "manager-a") || !strings.Contains(err.Error(), "region add fra") {
		t.Fatalf("second lock: %v", err)
	}
	if info, held, err := other.LockHolder(ctx); err != nil || !held || info.Holder != "manager-a" {
		t.Fatalf("LockHolder = %+v %v %v", info, held, err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if err := a.Release(ctx); err != nil {
		t.Fatalf("second release: %v", err)
	}
	b, err := other.Lock(ctx, "manager-b", "channel pause", 0)
	if err != nil {
		t.Fatalf("lock after release: %v", err)
	}

	// Someone overwrites the lock: b notices.
	if _, err := js.Publish(ctx, "$KV."+ConfigBucket("shop")+"."+KeyLock, []byte(`{"holder":"intruder"}`)); err != nil {
		t.Fatal(err)
	}
	// (b renews every 10 s with the default TTL; the release finds it.)
	if err := b.Release(ctx); !errors.Is(err, ErrLockLost) {
		t.Fatalf("release of an overwritten lock: %v", err)
	}
}

// TestLockExpires: the lock of a manager that died frees itself after its
// TTL, through the server's per-key TTL.
func TestLockExpires(t *testing.T) {
	s, js := openStore(t)
	ctx := context.Background()
	kv, err := js.KeyValue(ctx, ConfigBucket("shop"))
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	dead, _ := json.Marshal(LockInfo{Holder: "dead", Acquired: now, Expires: now.Add(time.Second)})
	if _, err := kv.Create(ctx, KeyLock, dead, jetstream.KeyTTL(time.Second)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Lock(ctx, "alive", "", time.Second); !errors.Is(err, ErrBusy) {
		t.Fatalf("lock while the dead one lives: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		l, err := s.Lock(ctx, "alive", "", time.Second)
		if err == nil {
			if err := l.Release(ctx); err != nil {
				t.Fatal(err)
			}
			break
		}
		if !errors.Is(err, ErrBusy) || time.Now().After(deadline) {
			t.Fatalf("lock after the TTL: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// A lock entry past its recorded expiry that the server kept (no TTL)
	// is taken over.
	old, _ := json.Marshal(LockInfo{Holder: "stale", Acquired: now.Add(-time.Hour), Expires: now.Add(-time.Minute)})
	if _, err := kv.Put(ctx, KeyLock, old); err != nil {
		t.Fatal(err)
	}
	l, err := s.Lock(ctx, "alive", "", time.Second)
	if err != nil {
		t.Fatalf("taking over a stale lock: %v", err)
	}
	if err := l.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestWatch(t *testing.T) {
	s, _ := openStore(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addRegions(t, s, "sgp")
	states, err := s.Watch(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next := func(ok func(State) bool) State {
		t.Helper()
		timeout := time.After(5 * time.Second)
		for {
			select {
			case st := <-states:
				if ok(st) {
					return st
				}
			case <-timeout:
				t.Fatal("no matching state")
			}
		}
	}
	st := next(func(st State) bool { return st.Instance != nil })
	if len(st.Regions) != 1 || len(st.Channels) != 0 {
		t.Fatalf("initial state = %+v", st)
	}
	addRegions(t, s, "fra")
	st = next(func(st State) bool { return len(st.Channels) == 2 })
	if st.Regions["fra"].NATS != "nats://fra:4222" {
		t.Fatalf("state = %+v", st)
	}
	if _, err := s.PauseChannel(ctx, "sgp", "fra"); err != nil {
		t.Fatal(err)
	}
	next(func(st State) bool { return st.Channels[ChannelKey("sgp", "fra")].Paused })
	if _, err := s.RemoveRegion(ctx, "fra"); err != nil {
		t.Fatal(err)
	}
	next(func(st State) bool { return len(st.Regions) == 1 && len(st.Channels) == 0 })
	// The clone handed out is independent of the watcher's state.
	c := st.Clone()
	c.Regions["x"] = Region{}
	if _, ok := st.Regions["x"]; ok {
		t.Fatal("Clone shares maps")
	}
	cancel()
	for range states { // closed when ctx ends
	}
}

func TestHeartbeatsAndStatus(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	addRegions(t, s, "sgp", "fra", "iad")
	now := time.Now()
	beats := []Heartbeat{
		{Region: "fra", Owner: "host.example.com-1-aa", Time: now, Seq: 3, Applied: map[string]uint64{"sgp": 8}, Channels: []channel.Status{
			{Origin: "sgp", Dest: "fra", State: channel.StateRunning, AppliedSeq: 8, ApplyRate: 12, LagSeconds: 0.5},
			{Origin: "iad", Dest: "fra", State: channel.StatePaused, LastError: "boom"},
		}},
		// a second child of fra, waiting for the receiver leases
		{Region: "fra", Owner: "b", Time: now, Channels: []channel.Status{{Origin: "sgp", Dest: "fra", State: channel.StateStarting}}},
		{Region: "sgp", Owner: "c", Time: now, Seq: 10, Applied: map[string]uint64{"fra": 3}},
	}
	for _, h := range beats {
		if err := s.PutHeartbeat(ctx, h); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.PutHeartbeat(ctx, Heartbeat{Region: "fra"}); !errors.Is(err, ErrInvalid) {
		t.Fatalf("heartbeat without owner: %v", err)
	}
	got, err := s.Heartbeats(ctx)
	if err != nil || len(got) != 3 || got[0].Owner != "b" || got[1].Owner != "host.example.com-1-aa" {
		t.Fatalf("Heartbeats = %+v, %v", got, err)
	}
	sts, err := s.Status(ctx, now)
	if err != nil {
		t.Fatal(err)
	}
	by := map[string]ChannelStatus{}
	for _, st := range sts {
		by[st.Origin+">"+st.Dest] = st
	}
	if st := by["sgp>fra"]; st.State != channel.StateRunning || st.Child != "host.example.com-1-aa" || st.AppliedSeq != 8 || st.OriginSeq != 10 || st.LagOps != 2 || st.ApplyRate != 12 || st.LagSeconds != 0.5 {
		t.Errorf("sgp>fra = %+v", st)
	}
	if st := by["iad>fra"]; st.State != channel.StatePaused || st.LastError != "boom" || st.OriginSeq != 0 {
		t.Errorf("iad>fra = %+v", st)
	}
	if st := by["fra>sgp"]; st.State != StateUnknown || !strings.Contains(st.Reason, "do not run") || st.AppliedSeq != 3 || st.LagOps != 0 {
		t.Errorf("fra>sgp = %+v", st)
	}
	if st := by["fra>iad"]; st.State != StateUnknown || !strings.Contains(st.Reason, "no fresh heartbeat") || st.HeartbeatAge != -1 {
		t.Errorf("fra>iad = %+v", st)
	}
	// Seen later than HeartbeatTTL, every heartbeat is stale.
	for _, st := range JoinStatus([]Channel{{Origin: "sgp", Dest: "fra"}}, beats, now.Add(HeartbeatTTL)) {
		if st.State != StateUnknown {
			t.Errorf("stale heartbeat: %+v", st)
		}
	}
	one, err := s.StatusOf(ctx, "sgp", "fra", now)
	if err != nil || one.State != channel.StateRunning {
		t.Fatalf("StatusOf = %+v %v", one, err)
	}
	if _, err := s.StatusOf(ctx, "sgp", "nope", now); !errors.Is(err, ErrNoRegion) {
		t.Fatalf("StatusOf unknown: %v", err)
	}
}

// TestReadsWhileKeysChange: Heartbeats, Load and Watch return every key
// while other keys of the bucket change as they read, as children's
// heartbeats and the floor do all the time. A KV watcher's first nil
// marker can come before all current values when keys change meanwhile
// (nats-io/nats-server#4824): a child missing from Heartbeats could let a
// failover go ahead that one child's heartbeat would have held back, and a
// region missing from a partial state looks removed.
func TestReadsWhileKeysChange(t *testing.T) {
	s, _ := openStore(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	regions := []string{"r0", "r1", "r2", "r3", "r4", "r5", "r6", "r7"}
	addRegions(t, s, regions...)
	const children = 16
	beat := func(i int) Heartbeat {
		return Heartbeat{Region: regions[i%len(regions)], Owner: "child-" + strconv.Itoa(i), Time: time.Now()}
	}
	for i := range children {
		if err := s.PutHeartbeat(ctx, beat(i)); err != nil {
			t.Fatal(err)
		}
	}
	// Writers: every heartbeat again and again, the floor and the regions.
	wctx, stop := context.WithCancel(ctx)
	var wg sync.WaitGroup
	for w := range 2 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for n := 0; n < 100_000 && wctx.Err() == nil; n++ {
				if err := s.PutHeartbeat(wctx, beat((n*2+w)%children)); err != nil && wctx.Err() == nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		var rev uint64
		for n := 0; n < 100_000 && wctx.Err() == nil; n++ {
			r, err := s.PutFloor(wctx, Floor{Applied: map[string]uint64{"r0": uint64(n)}, At: time.Now()}, rev)
			if err == nil {
				rev = r
				_, err = s.UpdateRegion(wctx, regions[n%len(regions)], func(r *Region) error {
					r.Replica = "replica-" + strconv.Itoa(n) + ":6379"
					return nil
				})
			}
			if err != nil {
				if wctx.Err() == nil {
					t.Error(err)
				}
				return
			}
		}
	}()
	defer func() { stop(); wg.Wait() }()
	for round := range 150 {
		hbs, err := s.Heartbeats(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(hbs) != children {
			t.Fatalf("round %d: Heartbeats returned %d of %d children", round, len(hbs), children)
		}
		st, err := s.Load(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Regions) != len(regions) || st.Instance == nil {
			t.Fatalf("round %d: Load returned %d of %d regions (instance %v)", round, len(st.Regions), len(regions), st.Instance != nil)
		}
		if round%10 == 0 {
			wctx, wcancel := context.WithCancel(ctx)
			states, err := s.Watch(wctx)
			if err != nil {
				t.Fatal(err)
			}
			first := <-states
			wcancel()
			for range states {
			}
			if len(first.Regions) != len(regions) || first.Instance == nil {
				t.Fatalf("round %d: Watch's first state holds %d of %d regions", round, len(first.Regions), len(regions))
			}
		}
	}
}
