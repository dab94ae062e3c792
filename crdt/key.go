package crdt

import (
	"maps"
	"slices"
	"sort"
)

// Type is a key's Redis type.
type Type uint8

// The supported types, in the order of precedence used when concurrent
// writes of different types leave more than one live substate on a key: the
// first live one in this order is the one applications see.
const (
	TypeNone   Type = 0
	TypeString Type = 1
	TypeHash   Type = 2
	TypeSet    Type = 3
	TypeZSet   Type = 4
)

// String returns the name TYPE reports.
func (t Type) String() string {
	switch t {
	case TypeString:
		return "string"
	case TypeHash:
		return "hash"
	case TypeSet:
		return "set"
	case TypeZSet:
		return "zset"
	}
	return "none"
}

// Persist is the deadline of an expiry entry written by PERSIST: it is
// longer than any TTL, so PERSIST beats every concurrent TTL.
const Persist int64 = -1

// ExpEntry is one entry of a key's expiry register: the op that wrote it and
// the absolute deadline in Unix ms (or Persist).
type ExpEntry struct {
	Dot      Dot
	Deadline int64
}

// Expiry is the multi-value register of a key's TTL. Concurrent entries
// resolve to the longest TTL, and PERSIST beats any TTL. A write that clears
// the TTL (SET without KEEPTTL, DEL) removes the entries it observed.
type Expiry struct {
	Entries []ExpEntry // live entries, sorted by region
	Rm      Vector
}

// Deadline returns the effective deadline in Unix ms, or 0 when the key does
// not expire.
func (x *Expiry) Deadline() int64 {
	var d int64
	for _, en := range x.Entries {
		if en.Deadline == Persist {
			return 0
		}
		d = max(d, en.Deadline)
	}
	return d
}

func (x *Expiry) observed() Vector {
	v := Vector{}
	for _, en := range x.Entries {
		if en.Dot.Seq > v[en.Dot.Region] {
			v[en.Dot.Region] = en.Dot.Seq
		}
	}
	return v
}

// ExpOp is the part of an Op that writes the expiry register.
type ExpOp struct {
	Rm       Vector // the entries the origin observed and removes
	Deadline int64  // the new entry: Unix ms, Persist, or 0 for none
}

func (x *Expiry) merge(id OpID, op *ExpOp) string {
	if len(op.Rm) > 0 {
		if x.Rm == nil {
			x.Rm = Vector{}
		}
		x.Rm.Merge(op.Rm)
	}
	x.Entries = slices.DeleteFunc(x.Entries, func(en ExpEntry) bool { return x.Rm.Covers(en.Dot) })
	if op.Deadline == 0 || x.Rm.Covers(id) {
		return ""
	}
	for _, en := range x.Entries {
		if en.Dot.Region == id.Region && en.Dot.Seq >= id.Seq {
			// This op, or a later one of its origin, which observed it (an
			// op of the same origin that arrives late is already superseded).
			return ""
		}
	}
	conflict := ""
	if len(x.Entries) > 0 {
		conflict = ConflictTTL
	}
	x.Entries = slices.DeleteFunc(x.Entries, func(en ExpEntry) bool { return en.Dot.Region == id.Region })
	x.Entries = append(x.Entries, ExpEntry{Dot: id, Deadline: op.Deadline})
	sort.Slice(x.Entries, func(i, j int) bool { return x.Entries[i].Dot.Region < x.Entries[j].Dot.Region })
	return conflict
}

// Key is the whole CRDT state of one key: one substate per type (normally
// only one is live) and the expiry register.
type Key struct {
	Str     *Elem
	Hash    map[string]*Elem
	Members map[string]*Elem
	ZSet    map[string]*Elem
	Exp     Expiry
}

// Op is one replicable write to one key, stamped at its origin.
type Op struct {
	ID    OpID
	TS    Timestamp // TS.Region == ID.Region
	Key   string
	Elems []ElemOp
	Exp   *ExpOp
}

// elems returns the substate map of a collection type, creating it.
func (k *Key) elems(t Type) map[string]*Elem {
	var m *map[string]*Elem
	switch t {
	case TypeHash:
		m = &k.Hash
	case TypeSet:
		m = &k.Members
	case TypeZSet:
		m = &k.ZSet
	default:
		return nil
	}
	if *m == nil {
		*m = make(map[string]*Elem)
	}
	return *m
}

// elem returns the Elem of a type and name, or nil.
func (k *Key) elem(t Type, name string) *Elem {
	switch t {
	case TypeString:
		return k.Str
	case TypeHash:
		return k.Hash[name]
	case TypeSet:
		return k.Members[name]
	case TypeZSet:
		return k.ZSet[name]
	}
	return nil
}

func (k *Key) elemOrNew(t Type, name string) *Elem {
	if t == TypeString {
		if k.Str == nil {
			k.Str = &Elem{}
		}
		return k.Str
	}
	m := k.elems(t)
	e := m[name]
	if e == nil {
		e = &Elem{}
		m[name] = e
	}
	return e
}

// Apply merges an op into the key. It is idempotent and commutes with every
// other op: the state after a set of ops does not depend on their order or
// on duplicates. It returns the conflicts the op met (for metrics and the
// conflict log); a local op never meets one.
func (k *Key) Apply(op *Op) []string {
	var conflicts []string
	before := k.liveTypes()
	for i := range op.Elems {
		eo := &op.Elems[i]
		if c := k.elemOrNew(eo.Type, eo.Name).merge(op.ID, op.TS, eo); c != "" {
			conflicts = append(conflicts, c)
		}
	}
	if op.Exp != nil {
		if c := k.Exp.merge(op.ID, op.Exp); c != "" {
			conflicts = append(conflicts, c)
		}
	}
	if after := k.liveTypes(); after > 1 && after > before {
		conflicts = append(conflicts, ConflictType)
	}
	k.prune()
	return conflicts
}

// liveTypes counts the substates that have a live element.
func (k *Key) liveTypes() int {
	n := 0
	for t := TypeString; t <= TypeZSet; t++ {
		if k.typeLive(t) {
			n++
		}
	}
	return n
}

func (k *Key) typeLive(t Type) bool {
	if t == TypeString {
		return k.Str != nil && k.Str.Live()
	}
	for _, e := range k.elems(t) {
		if e.Live() {
			return true
		}
	}
	return false
}

// prune forgets elements that hold nothing at all.
func (k *Key) prune() {
	if k.Str != nil && k.Str.empty() {
		k.Str = nil
	}
	for _, m := range []map[string]*Elem{k.Hash, k.Members, k.ZSet} {
		maps.DeleteFunc(m, func(_ string, e *Elem) bool { return e.empty() })
	}
	if len(k.Hash) == 0 {
		k.Hash = nil
	}
	if len(k.Members) == 0 {
		k.Members = nil
	}
	if len(k.ZSet) == 0 {
		k.ZSet = nil
	}
}

func (e *Elem) empty() bool { return len(e.Entries) == 0 && len(e.Ctr) == 0 && len(e.Rm) == 0 }

// Empty reports whether the key holds no state at all (not even tombstones).
func (k *Key) Empty() bool {
	return k.Str == nil && len(k.Hash) == 0 && len(k.Members) == 0 && len(k.ZSet) == 0 &&
		len(k.Exp.Entries) == 0 && len(k.Exp.Rm) == 0
}

// Expired reports whether the key's deadline has passed at wall time now.
func (k *Key) Expired(now int64) bool {
	d := k.Exp.Deadline()
	return d != 0 && now >= d
}

// Type returns the type applications see at wall time now: the first live
// substate in precedence order, or TypeNone when the key is absent or expired.
func (k *Key) Type(now int64) Type {
	if k.Expired(now) {
		return TypeNone
	}
	for t := TypeString; t <= TypeZSet; t++ {
		if k.typeLive(t) {
			return t
		}
	}
	return TypeNone
}

// GC collects tombstones that every region has applied past: floor is the
// pointwise minimum of the applied vectors of all regions that are not
// evicted. It reports whether the key is now empty and can be forgotten.
func (k *Key) GC(floor Vector) bool {
	if k.Str != nil && k.Str.gc(floor) {
		k.Str = nil
	}
	for _, m := range []map[string]*Elem{k.Hash, k.Members, k.ZSet} {
		maps.DeleteFunc(m, func(_ string, e *Elem) bool { return e.gc(floor) })
	}
	for r, s := range k.Exp.Rm {
		if s <= floor[r] {
			delete(k.Exp.Rm, r)
		}
	}
	k.prune()
	return k.Empty()
}

// Clone returns a deep copy of the key.
func (k *Key) Clone() *Key {
	c := &Key{Exp: Expiry{Entries: slices.Clone(k.Exp.Entries)}}
	if k.Exp.Rm != nil {
		c.Exp.Rm = k.Exp.Rm.Clone()
	}
	if k.Str != nil {
		c.Str = k.Str.clone()
	}
	cl := func(m map[string]*Elem) map[string]*Elem {
		if m == nil {
			return nil
		}
		o := make(map[string]*Elem, len(m))
		for n, e := range m {
			o[n] = e.clone()
		}
		return o
	}
	c.Hash, c.Members, c.ZSet = cl(k.Hash), cl(k.Members), cl(k.ZSet)
	return c
}
