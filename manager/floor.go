package manager

import (
	"context"
	"fmt"
	"time"
)

// ComputeFloor returns the collection floor of the instance: for every
// origin, the lowest sequence applied by any region that is not evicted (a
// region's own sequence counts as applied by itself). Tombstones at or
// below it are known to every region that can still send or receive ops,
// so they can be collected. ok is false when some non-evicted region has no
// heartbeat fresher than maxAge: its position is unknown, so nothing may be
// collected.
func ComputeFloor(st State, hbs []Heartbeat, now time.Time, maxAge time.Duration) (Floor, bool) {
	latest := map[string]Heartbeat{}
	for _, hb := range hbs {
		if now.Sub(hb.Time) > maxAge {
			continue
		}
		if cur, ok := latest[hb.Region]; !ok || hb.Seq > cur.Seq || hb.Time.After(cur.Time) {
			latest[hb.Region] = hb
		}
	}
	var regions []string
	for id, r := range st.Regions {
		if !r.Evicted {
			regions = append(regions, id)
		}
	}
	if len(regions) == 0 {
		return Floor{}, false
	}
	floor := Floor{Applied: map[string]uint64{}, At: now}
	for i, d := range regions {
		hb, ok := latest[d]
		if !ok {
			return Floor{}, false
		}
		for _, o := range regions {
			applied := hb.Applied[o]
			if o == d {
				applied = hb.Seq
			}
			if i == 0 || applied < floor.Applied[o] {
				floor.Applied[o] = applied
			}
		}
	}
	return floor, true
}

// AdvanceFloor computes the floor from the latest heartbeats and writes it
// when it moved forward. It never moves a floor back.
func (s *Store) AdvanceFloor(ctx context.Context, now time.Time) (Floor, bool, error) {
	st, err := s.Load(ctx)
	if err != nil {
		return Floor{}, false, err
	}
	hbs, err := s.Heartbeats(ctx)
	if err != nil {
		return Floor{}, false, err
	}
	f, ok := ComputeFloor(st, hbs, now, HeartbeatTTL)
	if !ok {
		return Floor{}, false, nil
	}
	old, rev, err := s.Floor(ctx)
	if err != nil {
		return Floor{}, false, err
	}
	if rev != 0 {
		moved := false
		for o, v := range f.Applied {
			if v < old.Applied[o] {
				f.Applied[o] = old.Applied[o] // never back
			}
			if f.Applied[o] > old.Applied[o] {
				moved = true
			}
		}
		if !moved {
			return old, false, nil
		}
	}
	if _, err := s.PutFloor(ctx, f, rev); err != nil {
		return Floor{}, false, fmt.Errorf("manager: writing the collection floor: %w", err)
	}
	return f, true, nil
}
