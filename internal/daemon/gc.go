package daemon

import (
	"os"
	"runtime/debug"
)

// GCPercent is the garbage collector's target (GOGC) of the processes that
// run children: a child's live heap is small (connections, buffers, the
// batches in flight) while it allocates per request and per op, so a
// collection every 100% of growth (Go's default) costs a large share of
// its CPU: measured on the catch-up benchmark, GOGC=400 cut the process's
// CPU per op by about 30% (docs/benchmarks.md).
const GCPercent = 400

// TuneGC sets GCPercent unless the environment sets GOGC, which keeps the
// last word.
func TuneGC() {
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(GCPercent)
	}
}
