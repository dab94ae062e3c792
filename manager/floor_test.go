package manager

import (
	"testing"
	"time"
)

func TestComputeFloor(t *testing.T) {
	now := time.Now()
	st := NewState()
	st.Regions = map[string]Region{"sgp": {ID: "sgp"}, "fra": {ID: "fra"}, "iad": {ID: "iad", Evicted: true}}
	hbs := []Heartbeat{
		{Region: "sgp", Time: now, Seq: 10, Applied: map[string]uint64{"fra": 7, "iad": 3}},
		{Region: "fra", Time: now, Seq: 9, Applied: map[string]uint64{"sgp": 8, "iad": 1}},
		{Region: "iad", Time: now.Add(-time.Hour), Seq: 50, Applied: map[string]uint64{"sgp": 1, "fra": 1}}, // evicted and stale
	}
	f, ok := ComputeFloor(st, hbs, now, HeartbeatTTL)
	if !ok {
		t.Fatal("no floor")
	}
	want := map[string]uint64{"sgp": 8, "fra": 7}
	if len(f.Applied) != len(want) || f.Applied["sgp"] != 8 || f.Applied["fra"] != 7 {
		t.Fatalf("floor %v, want %v (the evicted region does not hold it back)", f.Applied, want)
	}
	// a region without a fresh heartbeat stops the floor: its position is unknown
	st.Regions["iad"] = Region{ID: "iad"}
	if _, ok := ComputeFloor(st, hbs, now, HeartbeatTTL); ok {
		t.Fatal("a floor although iad's position is unknown")
	}
}
