package crdt

import (
	"math"
	"slices"
	"strings"
)

// The remote apply's fast path for its most common op, a plain string
// write, without the model's structures: ParseStringSet reads the op and
// MergeStringSet merges it into an encoded state record, both in place,
// with what Elem.merge and MarshalState would do. Reading an op or a record
// into Op and Elem (maps of runs, slices of entries, their strings) and
// encoding it again costs most of a remote apply's time in the child; these
// allocate a copy of the op (its key and value are parts of it), a copy of
// the record and the merged record, which they encode with MarshalState's
// writer. They handle the forms the engine writes; anything else (more
// regions than they hold, a record with an expiry register, an encoding
// they do not expect) is left to MergeStringRecord, which they equal
// wherever they answer (TestPropMergeStringSet).

// maxFastRegions bounds the entries and runs of one record or op that the
// fast merge holds (on the stack): a region per entry and per run.
const maxFastRegions = 8

// namedRun is a region's Run in a record or an op.
type namedRun struct {
	region string
	run    Run
}

// StringSet is an op that writes one string value (SET and the like): one
// string element of kind set and no expiry, read by ParseStringSet.
type StringSet struct {
	ID  OpID
	TS  Timestamp
	Key string
	Val string
	rm  [maxFastRegions]namedRun // the element's removal context
	nrm int
}

// ParseStringSet reads an encoded op that is a StringSet. ok is false when
// it is not one or not in the form this reader expects; UnmarshalOp then
// decides what it is (and reports a corrupt op).
func ParseStringSet(b []byte) (op StringSet, ok bool) {
	p := mpScan{s: string(b)} // one copy: the key and the value are parts of it
	if p.arr() != 8 || p.int() != WireVersion {
		return op, false
	}
	op.ID.Region = p.str()
	seq, ms, lc := p.int(), p.int(), p.int()
	op.Key = p.str()
	if p.bad || !ValidRegion(op.ID.Region) || seq <= 0 || lc < 0 || lc > math.MaxUint32 {
		return op, false
	}
	op.ID.Seq = uint64(seq)
	op.TS = Timestamp{Ms: ms, Lc: uint32(lc), Region: op.ID.Region}
	// one element: [type, name, rm, kind, value]
	if p.arr() != 1 || p.arr() != 5 || p.int() != int64(TypeString) || p.str() != "" {
		return op, false
	}
	if op.nrm = p.runs(&op.rm); op.nrm < 0 {
		return op, false
	}
	if p.int() != int64(KindSet) {
		return op, false
	}
	op.Val = p.str()
	if p.arr() != 0 || p.bad || p.i != len(p.s) {
		return op, false
	}
	return op, true
}

// fastElem is a string's state record (Elem, no expiry) as MergeStringSet
// holds it.
type fastElem struct {
	entries  [maxFastRegions + 1]Entry // sorted by region; one more for the op's
	ne       int
	ctr, rm  [maxFastRegions]namedRun
	nctr, nr int
}

// MergeStringSet is MergeStringRecord(rec, op) for a StringSet: out and ok
// are what that returns. handled is false when rec is not in the form this
// reader expects or holds more than it can; the caller then calls
// MergeStringRecord.
func MergeStringSet(rec []byte, op *StringSet) (out []byte, ok, handled bool) {
	var e fastElem
	if rec != nil && !e.read(string(rec)) {
		return nil, false, false
	}
	// The op's removal context joins the record's (Elem.merge).
	for _, r := range op.rm[:op.nrm] {
		j := findRun(e.rm[:e.nr], r.region)
		switch {
		case j >= 0:
			if r.run.Seq > e.rm[j].run.Seq {
				e.rm[j].run = r.run
			}
		case r.run.Seq > 0:
			if e.nr == len(e.rm) {
				return nil, false, false
			}
			e.rm[e.nr] = r
			e.nr++
		}
	}
	rmSeq := func(region string) uint64 {
		if j := findRun(e.rm[:e.nr], region); j >= 0 {
			return e.rm[j].run.Seq
		}
		return 0
	}
	// What the context covers goes.
	n := 0
	for _, en := range e.entries[:e.ne] {
		if en.Dot.Seq > rmSeq(en.Dot.Region) {
			e.entries[n] = en
			n++
		}
	}
	e.ne = n
	n = 0
	for _, c := range e.ctr[:e.nctr] {
		if c.run.Seq > rmSeq(c.region) {
			e.ctr[n] = c
			n++
		}
	}
	e.nctr = n
	// The write's entry, unless the context covers it or it is there.
	id := op.ID
	has := false
	for _, en := range e.entries[:e.ne] {
		has = has || en.Dot == id
	}
	if id.Seq > rmSeq(id.Region) && !has {
		for _, en := range e.entries[:e.ne] {
			if en.Dot.Region != id.Region {
				return nil, false, true // a concurrent write: a conflict
			}
		}
		for _, c := range e.ctr[:e.nctr] {
			if c.region != id.Region {
				return nil, false, true // live increments of another region
			}
		}
		// At most one entry per region: the op's replaces an older one of
		// its region (all entries are of its region now).
		n = 0
		for _, en := range e.entries[:e.ne] {
			if en.Dot.Seq >= id.Seq {
				e.entries[n] = en
				n++
			}
		}
		e.entries[n] = Entry{Dot: id, Ms: op.TS.Ms, Lc: op.TS.Lc, Val: op.Val}
		e.ne = n + 1
		sortByRegion(e.entries[:e.ne])
	}
	if e.ne == 0 && e.nctr == 0 {
		return nil, false, true // not live
	}
	return e.write(len(rec) + len(op.Val) + 32), true, true
}

// read reads a string's state record as MarshalState writes it, without
// an expiry register; false for anything else.
func (e *fastElem) read(s string) bool {
	p := mpScan{s: s}
	n := p.arr()
	if n < 2 || n > 4 || p.int() != WireVersion {
		return false
	}
	ne := p.arr()
	if ne < 0 || ne > maxFastRegions {
		return false
	}
	for i := range ne {
		if p.arr() != 5 {
			return false
		}
		region, seq, ms, lc, val := p.str(), p.int(), p.int(), p.int(), p.str()
		if p.bad || !ValidRegion(region) || seq < 0 || lc < 0 || lc > math.MaxUint32 {
			return false
		}
		e.entries[i] = Entry{Dot: Dot{Region: region, Seq: uint64(seq)}, Ms: ms, Lc: uint32(lc), Val: val}
	}
	e.ne = ne
	if n > 2 {
		if e.nctr = p.runs(&e.ctr); e.nctr < 0 {
			return false
		}
	}
	if n > 3 {
		if e.nr = p.runs(&e.rm); e.nr < 0 {
			return false
		}
	}
	if p.bad || p.i != len(p.s) {
		return false
	}
	sortByRegion(e.entries[:e.ne])
	for i := 1; i < e.ne; i++ {
		if e.entries[i].Dot.Region == e.entries[i-1].Dot.Region {
			return false // not as the engine writes records
		}
	}
	return true
}

// write encodes the state as MarshalState(TypeString, e, nil) does.
func (e *fastElem) write(size int) []byte {
	n := 4
	if e.nr == 0 {
		n = 3
		if e.nctr == 0 {
			n = 2
		}
	}
	w := newBufWriter(size)
	w.stateHead(TypeString, n, e.entries[:e.ne])
	if n > 2 {
		w.namedRuns(e.ctr[:e.nctr])
	}
	if n > 3 {
		w.namedRuns(e.rm[:e.nr])
	}
	return w.done()
}

// namedRuns writes runs sorted by region, as runs writes a map.
func (w *writer) namedRuns(rs []namedRun) {
	slices.SortFunc(rs, func(a, b namedRun) int { return strings.Compare(a.region, b.region) })
	w.arr(len(rs))
	for _, r := range rs {
		w.run(r.region, r.run)
	}
}

// runs reads a run map (reader.runs) into rs and returns how many it read;
// -1 when there are more than rs holds, a region twice, or a bad form.
func (p *mpScan) runs(rs *[maxFastRegions]namedRun) int {
	n := p.arr()
	if n < 0 || n > len(rs) {
		return -1
	}
	for i := range n {
		if p.arr() != 5 {
			return -1
		}
		region := p.str()
		seq, start, ci, f := p.int(), p.int(), p.int(), p.float()
		if p.bad || !ValidRegion(region) || seq < 0 || start < 0 || findRun(rs[:i], region) >= 0 {
			return -1
		}
		rs[i] = namedRun{region: region, run: Run{Seq: uint64(seq), Start: uint64(start), I: ci, F: f}}
	}
	return n
}

// float reads a float of either width, or an integer (as reader.float).
func (p *mpScan) float() float64 {
	if p.bad || p.i >= len(p.s) {
		p.bad = true
		return 0
	}
	switch p.s[p.i] {
	case 0xca:
		p.i++
		return float64(math.Float32frombits(uint32(p.be(4))))
	case 0xcb:
		p.i++
		return math.Float64frombits(p.be(8))
	}
	return float64(p.int())
}

func findRun(rs []namedRun, region string) int {
	for i, r := range rs {
		if r.region == region {
			return i
		}
	}
	return -1
}
