package manager

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
)

// TestFailoverSwap: Failover swaps master and replica with a revision
// check; a region without replica, an evicted or unknown region is
// refused and nothing changes; a second manager working from the same
// revision loses with ErrConflict.
func TestFailoverSwap(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	addRegions(t, s, "fra")
	if _, _, err := s.AddRegion(ctx, Region{ID: "sgp", NATS: "nats://sgp:4222", Redis: "sgp-a:6379", Replica: "sgp-b:6379"}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Failover(ctx, "fra"); !errors.Is(err, ErrNoReplica) {
		t.Fatalf("failover of a region without replica: %v", err)
	}
	if r, _ := s.GetRegion(ctx, "fra"); r.Redis != "fra:6379" || !r.FailedOver.IsZero() {
		t.Fatalf("a refused failover changed the region: %+v", r)
	}
	if _, err := s.Failover(ctx, "nope"); !errors.Is(err, ErrNoRegion) {
		t.Fatalf("failover of an unknown region: %v", err)
	}
	before := time.Now()
	r, err := s.Failover(ctx, "sgp")
	if err != nil {
		t.Fatal(err)
	}
	if r.Redis != "sgp-b:6379" || r.Replica != "sgp-a:6379" || r.FailedOver.Before(before.Add(-time.Second)) {
		t.Fatalf("after failover: %+v", r)
	}
	if got, _ := s.GetRegion(ctx, "sgp"); got.Redis != "sgp-b:6379" || got.Replica != "sgp-a:6379" {
		t.Fatalf("stored: %+v", got)
	}
	// Two managers read the same revision; only the first swap lands.
	_, rev, err := s.region(ctx, "sgp")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Failover(ctx, "sgp"); err != nil {
		t.Fatal(err)
	}
	stale := r
	stale.Redis, stale.Replica = stale.Replica, stale.Redis
	if _, err := s.update(ctx, RegionKey("sgp"), stale, rev); !errors.Is(err, ErrConflict) {
		t.Fatalf("a swap from a stale revision: %v, want ErrConflict", err)
	}
	if _, _, err := s.EvictRegion(ctx, "sgp"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Failover(ctx, "sgp"); !errors.Is(err, ErrEvicted) {
		t.Fatalf("failover of an evicted region: %v", err)
	}
}

// TestDueFailovers: the automatic mode fails over only when every fresh
// heartbeat of the region has seen its current master down long enough
// and some child reaches the replica.
func TestDueFailovers(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	after := 5 * time.Second
	st := NewState()
	st.Regions["sgp"] = Region{ID: "sgp", Redis: "a:1", Replica: "b:1"}
	st.Regions["fra"] = Region{ID: "fra", Redis: "c:1"} // no replica
	down := func(owner string, since time.Duration, replicaOK bool) Heartbeat {
		return Heartbeat{Region: "sgp", Owner: owner, Time: now.Add(-time.Second), Redis: &RedisHealth{
			Master: "a:1", MasterError: "connection refused", Since: now.Add(-since), Replica: "b:1", ReplicaOK: replicaOK,
		}}
	}
	up := down("x", time.Minute, true)
	up.Redis.MasterOK = true
	stale := down("s", time.Minute, true)
	stale.Time = now.Add(-HeartbeatTTL - time.Second)
	other := down("o", time.Minute, true)
	other.Redis.Master = "b:1" // reports another master (after a failover)
	fraDown := Heartbeat{Region: "fra", Owner: "f", Time: now, Redis: &RedisHealth{Master: "c:1", Since: now.Add(-time.Minute)}}
	recent := st.Clone()
	r := recent.Regions["sgp"]
	r.FailedOver = now.Add(-time.Second)
	recent.Regions["sgp"] = r
	for _, tc := range []struct {
		name string
		st   State
		hbs  []Heartbeat
		want string
	}{
		{"all children see it down", st, []Heartbeat{down("1", 6*time.Second, true), down("2", 10*time.Second, false), fraDown}, "sgp"},
		{"not long enough", st, []Heartbeat{down("1", 6*time.Second, true), down("2", 4*time.Second, true)}, ""},
		{"one child reaches it", st, []Heartbeat{down("1", time.Minute, true), up}, ""},
		{"no child reaches the replica", st, []Heartbeat{down("1", time.Minute, false)}, ""},
		{"no heartbeat", st, nil, ""},
		{"only stale heartbeats", st, []Heartbeat{stale}, ""},
		{"stale heartbeats do not veto", st, []Heartbeat{down("1", time.Minute, true), func() Heartbeat { h := up; h.Time = stale.Time; return h }()}, "sgp"},
		{"a child on another master", st, []Heartbeat{down("1", time.Minute, true), other}, ""},
		{"a child that does not report its Redis", st, []Heartbeat{down("1", time.Minute, true), {Region: "sgp", Owner: "old", Time: now}}, ""},
		{"failed over a moment ago", recent, []Heartbeat{down("1", time.Minute, true)}, ""},
	} {
		var got []string
		for _, d := range DueFailovers(tc.st, tc.hbs, now, after) {
			got = append(got, d.Region)
			if !strings.Contains(d.Reason, "a:1") || !strings.Contains(d.Reason, "b:1") {
				t.Errorf("%s: reason %q names neither master nor replica", tc.name, d.Reason)
			}
		}
		if strings.Join(got, ",") != tc.want {
			t.Errorf("%s: due %v, want %q", tc.name, got, tc.want)
		}
	}
}

// TestAutoFailover: one round of the automatic mode swaps the region whose
// children report its master down, from the heartbeats in the store.
func TestAutoFailover(t *testing.T) {
	s, _ := openStore(t)
	ctx := context.Background()
	if _, _, err := s.AddRegion(ctx, Region{ID: "sgp", NATS: "nats://sgp:4222", Redis: "a:1", Replica: "b:1"}); err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC()
	hb := Heartbeat{Region: "sgp", Owner: "c1", Time: now, Redis: &RedisHealth{Master: "a:1", Since: now.Add(-10 * time.Second), Replica: "b:1", ReplicaOK: true}}
	if err := s.PutHeartbeat(ctx, hb); err != nil {
		t.Fatal(err)
	}
	done, due, err := s.AutoFailover(ctx, now, 5*time.Second)
	if err != nil || len(done) != 1 || len(due) != 1 || done[0].Redis != "b:1" || done[0].Replica != "a:1" {
		t.Fatalf("auto failover: %+v %+v %v", done, due, err)
	}
	// The same heartbeats do not fail it back: they name the old master.
	done, _, err = s.AutoFailover(ctx, now.Add(time.Minute), 5*time.Second)
	if err != nil || len(done) != 0 {
		t.Fatalf("second round: %+v %v", done, err)
	}
	// WaitServing returns once a child serves writes on the new master.
	r, _ := s.GetRegion(ctx, "sgp")
	go func() {
		time.Sleep(100 * time.Millisecond)
		h := Heartbeat{Region: "sgp", Owner: "c1", Time: time.Now().UTC(), Redis: &RedisHealth{Master: "b:1", MasterOK: true, Writable: true}}
		_ = s.PutHeartbeat(ctx, h)
	}()
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	h, err := s.WaitServing(wctx, r, 20*time.Millisecond)
	if err != nil || !Serving(h, "b:1") {
		t.Fatalf("WaitServing: %+v, %v", h, err)
	}
}
