package child

import (
	"context"
	_ "embed"
	"fmt"
	"sort"
	"time"

	"github.com/globalreplica/globalreplica/crdt"
)

// luaGC is gr_gc, tombstone collection (appended to the library before
// register.lua).
//
//go:embed lua/gc.lua
var luaGC string

// GCBatch is how many keys one gr_gc call scans (SCAN COUNT): each call is
// one atomic step in Redis, so this bounds how long it holds Redis.
const GCBatch = 256

// GCStats is what one collection did.
type GCStats struct {
	Scanned  int // keys visited (database 1 state keys and database 0 strings)
	Removals int // removal-context entries dropped (elements' and expiry registers')
	Elements int // tombstone elements dropped (string tombstones, hash fields, members)
	Decoded  int // state records decoded (those with a removal context; the rest are passed over)
}

// GCPace spreads a collection out: after each gr_gc call, CollectTombstones
// waits this many times as long as the call took, so that a collection
// holds Redis at most 1/(1+GCPace) of the time (20%), whatever the size of
// the keyspace it scans.
const GCPace = 4

// Collected is the number of tombstones collected: removal-context entries
// and empty elements dropped.
func (s GCStats) Collected() int { return s.Removals + s.Elements }

// CollectTombstones applies the model's tombstone collection (crdt.Key.GC)
// with floor to the region's whole state: floor is the pointwise minimum of
// the applied vectors of every region that is not evicted (manager.Floor),
// so everything at or below it has been applied everywhere. It scans
// database 1's per-key state and database 0's live strings in steps of
// GCBatch keys, each one atomic function call, so writes and applies go on
// in between; it changes nothing visible. It returns how many tombstones it
// collected.
func (e *Engine) CollectTombstones(ctx context.Context, floor crdt.Vector) (int, error) {
	st, err := e.gc(ctx, floor, GCPace)
	return st.Collected(), err
}

// GC is CollectTombstones with the details, and without pauses.
func (e *Engine) GC(ctx context.Context, floor crdt.Vector) (GCStats, error) {
	return e.gc(ctx, floor, 0)
}

// gc runs a collection, waiting pace times as long as each call took
// after it.
func (e *Engine) gc(ctx context.Context, floor crdt.Vector, pace int) (GCStats, error) {
	var st GCStats
	fl := make([]any, 0, 2*len(floor))
	regions := make([]string, 0, len(floor))
	for r := range floor {
		regions = append(regions, r)
	}
	sort.Strings(regions)
	for _, r := range regions {
		if floor[r] > 0 {
			fl = append(fl, r, floor[r])
		}
	}
	for _, phase := range []int{1, 0} {
		cursor := "0"
		for {
			if err := ctx.Err(); err != nil {
				return st, err
			}
			argv := append([]any{phase, cursor, GCBatch}, fl...)
			t0 := time.Now()
			v, err := e.fcall(ctx, "gr_gc", argv)
			took := time.Since(t0)
			if err != nil {
				return st, fmt.Errorf("child: collecting tombstones: %w", err)
			}
			arr, ok := v.([]any)
			if !ok || len(arr) != 5 {
				return st, fmt.Errorf("child: unexpected gc reply %v", v)
			}
			cursor, _ = arr[0].(string)
			st.Scanned += int(toInt(arr[1]))
			st.Removals += int(toInt(arr[2]))
			st.Elements += int(toInt(arr[3]))
			st.Decoded += int(toInt(arr[4]))
			if cursor == "0" || cursor == "" {
				break
			}
			if pace > 0 {
				if err := sleepCtx(ctx, time.Duration(pace)*took); err != nil {
					return st, err
				}
			}
		}
	}
	return st, nil
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
