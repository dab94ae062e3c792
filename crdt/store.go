package crdt

import "sort"

// Store is a whole region's state in the model: its keys, clock, sequence
// and applied vector. It is what the Redis engine keeps in Redis, and what
// the property and differential tests run as the reference. It is not safe
// for concurrent use.
type Store struct {
	Region  string
	Clock   Clock
	Seq     uint64 // the last sequence number issued
	Applied Vector // per origin, the highest sequence applied here (own ops included)
	Keys    map[string]*Key
}

// NewStore returns an empty store of a region.
func NewStore(region string) *Store {
	return &Store{Region: region, Applied: Vector{}, Keys: map[string]*Key{}}
}

// Key returns the state of a key, creating an empty one.
func (s *Store) Key(name string) *Key {
	k := s.Keys[name]
	if k == nil {
		k = &Key{}
		s.Keys[name] = k
	}
	return k
}

// Write runs a generator against a key at wall time now, as a command at
// the origin does. If the generator returns an op, the op consumed the next
// sequence number and the clock reading and is already applied to the key;
// otherwise neither was consumed.
func (s *Store) Write(name string, now int64, gen func(k *Key, st Stamp) (*Op, error)) (*Op, error) {
	clock := s.Clock
	st := Stamp{ID: OpID{Region: s.Region, Seq: s.Seq + 1}, TS: clock.Now(s.Region, now), Now: now}
	k := s.Key(name)
	op, err := gen(k, st)
	if op == nil || err != nil {
		if k.Empty() {
			delete(s.Keys, name)
		}
		return nil, err
	}
	s.Clock, s.Seq = clock, st.ID.Seq
	s.Applied[s.Region] = s.Seq
	return op, nil
}

// Apply merges a remote op and raises the applied vector. Ops of one origin
// may come in any order and more than once; the state does not depend on it.
func (s *Store) Apply(op *Op) []string {
	s.Clock.Observe(op.TS)
	if op.ID.Seq > s.Applied[op.ID.Region] {
		s.Applied[op.ID.Region] = op.ID.Seq
	}
	k := s.Key(op.Key)
	c := k.Apply(op)
	if k.Empty() {
		delete(s.Keys, op.Key)
	}
	return c
}

// GC collects tombstones below floor (see Key.GC).
func (s *Store) GC(floor Vector) {
	for name, k := range s.Keys {
		if k.GC(floor) {
			delete(s.Keys, name)
		}
	}
}

// Visible is the user-visible state of one key at a moment: what
// convergence is judged on.
type Visible struct {
	Type     Type
	Str      string
	Fields   []Field // hash fields, or sorted set members with scores
	Members  []string
	Deadline int64
}

// Snapshot returns the user-visible state of every live key at wall time
// now, keyed by key name.
func (s *Store) Snapshot(now int64) map[string]Visible {
	out := make(map[string]Visible)
	for name, k := range s.Keys {
		v := Visible{Type: k.Type(now), Deadline: k.Exp.Deadline()}
		switch v.Type {
		case TypeNone:
			continue
		case TypeString:
			v.Str, _ = k.Get(now)
		case TypeHash:
			v.Fields = k.HGetAll(now)
		case TypeSet:
			v.Members = k.SMembers(now)
		case TypeZSet:
			v.Fields = k.ZRange(now)
		}
		out[name] = v
	}
	return out
}

// KeyNames returns the store's key names in order, live or not.
func (s *Store) KeyNames() []string {
	ks := make([]string, 0, len(s.Keys))
	for k := range s.Keys {
		ks = append(ks, k)
	}
	sort.Strings(ks)
	return ks
}
