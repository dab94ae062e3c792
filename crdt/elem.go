package crdt

import (
	"slices"
	"strings"
)

// Entry is one register value of an Elem: written by the op Dot at time
// (Ms, Lc, Dot.Region). Val holds the bytes of a string or hash field (empty
// for set members); Score holds a sorted set member's score.
type Entry struct {
	Dot   Dot
	Ms    int64
	Lc    uint32
	Val   string
	Score float64
}

// TS returns the entry's HLC timestamp.
func (e Entry) TS() Timestamp { return Timestamp{Ms: e.Ms, Lc: e.Lc, Region: e.Dot.Region} }

// Run is a region's cumulative counter contribution to an Elem: the sums of
// its increments (I for integer, F for float increments) from the op Start
// (the first increment of the run) up to the op Seq. A region starts a new
// run when a remove it observed covered its previous one. In a removal
// context a Run records what the remove observed of that region: everything
// of the region up to Seq is gone, and if the run observed is still
// growing, only its part above I and F survives.
type Run struct {
	Seq   uint64
	Start uint64
	I     int64
	F     float64
}

// Elem is the CRDT behind a string, a hash field, a set member or a sorted
// set member. See the package documentation. The zero value is empty.
type Elem struct {
	Entries []Entry        // live entries, at most one per region, sorted by region
	Ctr     map[string]Run // live counter runs per region
	Rm      map[string]Run // removal context per region
}

// ElemKind says what an ElemOp writes besides its removal context.
type ElemKind uint8

// The kinds of ElemOp.
const (
	KindRemove ElemKind = 0 // only the removal context
	KindSet    ElemKind = 1 // a new register entry (Val or Score)
	KindIncr   ElemKind = 2 // a new state of the origin's counter run
)

// ElemOp is the part of an Op that concerns one Elem of a key.
type ElemOp struct {
	Type  Type
	Name  string         // field or member; empty for a string
	Rm    map[string]Run // what the origin observed and removes
	Kind  ElemKind
	Val   string  // KindSet on strings, hashes and sets
	Score float64 // KindSet on sorted sets
	Run   Run     // KindIncr: the origin's run after this op (Run.Seq is the op's Seq)
}

// Conflict kinds reported by Apply when an op meets concurrent state.
const (
	ConflictLWW      = "lww"         // two concurrent register writes; the later timestamp won
	ConflictSetIncr  = "set-incr"    // a write did not observe increments; they were added on top
	ConflictRemove   = "remove"      // a remove did not observe a write; the write survived
	ConflictTTL      = "ttl"         // concurrent expiry writes; the longest (or PERSIST) won
	ConflictType     = "type"        // concurrent writes of different types to one key
	ConflictNonNumer = "non-numeric" // increments met a non-numeric value; the value is shown
)

// covered reports whether the removal context covers the dot.
func (e *Elem) covered(d Dot) bool { return d.Seq <= e.Rm[d.Region].Seq }

// merge applies an ElemOp of the op id at time ts. It returns the conflict
// kind it met, or "".
func (e *Elem) merge(id OpID, ts Timestamp, op *ElemOp) string {
	for r, run := range op.Rm {
		if run.Seq > e.Rm[r].Seq {
			if e.Rm == nil {
				e.Rm = make(map[string]Run, len(op.Rm))
			}
			e.Rm[r] = run
		}
	}
	e.Entries = slices.DeleteFunc(e.Entries, func(en Entry) bool { return e.covered(en.Dot) })
	for r, c := range e.Ctr {
		if c.Seq <= e.Rm[r].Seq {
			delete(e.Ctr, r)
		}
	}
	conflict := ""
	switch op.Kind {
	case KindSet:
		if e.covered(id) || e.hasDot(id) {
			break
		}
		for _, en := range e.Entries {
			if en.Dot.Region != id.Region {
				conflict = ConflictLWW
			}
		}
		if conflict == "" && e.liveCounter(id.Region) {
			conflict = ConflictSetIncr
		}
		e.Entries = append(e.Entries, Entry{Dot: id, Ms: ts.Ms, Lc: ts.Lc, Val: op.Val, Score: op.Score})
		// At most one entry per region: the origin observed its own earlier
		// entry, so its removal context already dropped it; keep the
		// invariant even for hand-made ops.
		e.Entries = slices.DeleteFunc(e.Entries, func(en Entry) bool {
			return en.Dot.Region == id.Region && en.Dot.Seq < id.Seq
		})
		sortByRegion(e.Entries)
	case KindIncr:
		run := op.Run
		run.Seq = id.Seq
		if run.Seq <= e.Rm[id.Region].Seq || run.Seq <= e.Ctr[id.Region].Seq {
			break
		}
		if e.Ctr == nil {
			e.Ctr = make(map[string]Run, 1)
		}
		e.Ctr[id.Region] = run
	case KindRemove:
		if e.Live() && len(op.Rm) > 0 {
			conflict = ConflictRemove
		}
	}
	return conflict
}

func (e *Elem) hasDot(d Dot) bool {
	for _, en := range e.Entries {
		if en.Dot == d {
			return true
		}
	}
	return false
}

// liveCounter reports whether some region other than except has increments
// that no remove observed.
func (e *Elem) liveCounter(except string) bool {
	for r := range e.Ctr {
		if r != except {
			return true
		}
	}
	return false
}

// Winner returns the visible register entry: the one with the greatest
// timestamp among the live entries.
func (e *Elem) Winner() (Entry, bool) {
	if len(e.Entries) == 0 {
		return Entry{}, false
	}
	w := e.Entries[0]
	for _, en := range e.Entries[1:] {
		if w.TS().Less(en.TS()) {
			w = en
		}
	}
	return w, true
}

// Delta returns the increments that no remove observed: the integer and the
// float part, summed over regions in sorted order so that every region
// computes the same float, and whether there are any.
func (e *Elem) Delta() (i int64, f float64, has bool) {
	if len(e.Ctr) == 0 {
		return 0, 0, false
	}
	for _, r := range sortedKeys(e.Ctr) {
		c, rm := e.Ctr[r], e.Rm[r]
		if c.Seq <= rm.Seq {
			continue
		}
		has = true
		if c.Start == rm.Start {
			i += c.I - rm.I
			f += c.F - rm.F
		} else {
			i += c.I
			f += c.F
		}
	}
	return i, f, has
}

// Live reports whether the element is visible: it has a live entry or
// increments that no remove observed.
func (e *Elem) Live() bool {
	if len(e.Entries) > 0 {
		return true
	}
	_, _, has := e.Delta()
	return has
}

// observed returns the removal context of an op made now at a region whose
// state is e: for every region with live state, the highest sequence number
// seen and, when that is the region's live counter run, the run itself, so
// the op removes exactly what it observed.
//
// The context of a region is a function of that one op of the region: an
// increment contributes its run, a register write a bare sequence number
// (a region's run never continues past its own later write, so no counter
// state is needed to cover it). Two removes that observed the same op of a
// region thus carry the same context, whatever else their origins had seen,
// and the merge of contexts (maximum by sequence number) is a join.
func (e *Elem) observed() map[string]Run {
	rm := make(map[string]Run)
	for _, en := range e.Entries {
		if en.Dot.Seq > rm[en.Dot.Region].Seq {
			rm[en.Dot.Region] = Run{Seq: en.Dot.Seq}
		}
	}
	for r, c := range e.Ctr {
		if c.Seq > rm[r].Seq {
			rm[r] = c
		}
	}
	return rm
}

// gc drops removal context entries that every region has applied past and
// that no live run still needs. It reports whether the element is now empty
// and can be forgotten.
func (e *Elem) gc(floor Vector) bool {
	for r, rm := range e.Rm {
		if rm.Seq > floor[r] {
			continue
		}
		if c, ok := e.Ctr[r]; ok && c.Start == rm.Start {
			continue
		}
		if _, ok := e.Ctr[r]; !ok && rm.Start != 0 {
			// The remove observed a counter run of r, and r may still extend
			// that run with ops it issued before it applied the remove: they
			// are above min, carry the run's cumulative sum and need this
			// entry to subtract what was removed. Only a later run of r
			// (which outranks them) proves the run is over.
			continue
		}
		delete(e.Rm, r)
	}
	return len(e.Entries) == 0 && len(e.Ctr) == 0 && len(e.Rm) == 0
}

// clone returns a deep copy.
func (e *Elem) clone() *Elem {
	c := &Elem{Entries: slices.Clone(e.Entries)}
	if e.Ctr != nil {
		c.Ctr = make(map[string]Run, len(e.Ctr))
		for r, v := range e.Ctr {
			c.Ctr[r] = v
		}
	}
	if e.Rm != nil {
		c.Rm = make(map[string]Run, len(e.Rm))
		for r, v := range e.Rm {
			c.Rm[r] = v
		}
	}
	return c
}

func sortedKeys[V any](m map[string]V) []string {
	return appendSortedKeys(make([]string, 0, len(m)), m)
}

// appendSortedKeys appends m's keys to ks, sorted; with ks a slice of an
// array on the caller's stack, it allocates nothing for small maps.
func appendSortedKeys[V any](ks []string, m map[string]V) []string {
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

// sortByRegion sorts entries by region (one entry per region).
func sortByRegion(es []Entry) {
	if len(es) > 1 {
		slices.SortStableFunc(es, func(a, b Entry) int { return strings.Compare(a.Dot.Region, b.Dot.Region) })
	}
}
