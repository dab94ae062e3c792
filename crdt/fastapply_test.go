package crdt

import (
	"bytes"
	"testing"

	"pgregory.net/rapid"
)

// TestMergeStringRecord checks the fast path's merge against the model's:
// where it answers, the record is the model's state after the op; where
// the op or the record is outside its case, it declines.
func TestMergeStringRecord(t *testing.T) {
	const now = 1_764_000_000_000
	var t0 *testing.T // the running (sub)test, for the helpers
	set := func(s *Store, key, val string) *Op {
		t := t0
		t.Helper()
		op, err := s.Write(key, now, func(k *Key, st Stamp) (*Op, error) {
			op, _, _, _, err := k.Set(key, val, SetOpts{}, st)
			return op, err
		})
		if err != nil || op == nil {
			t.Fatalf("set %s: %v", key, err)
		}
		return op
	}
	write := func(s *Store, key string, gen func(k *Key, st Stamp) (*Op, error)) *Op {
		t := t0
		t.Helper()
		op, err := s.Write(key, now, gen)
		if err != nil || op == nil {
			t.Fatalf("write %s: %v", key, err)
		}
		return op
	}
	// record is what database 0 holds for a live string of the store.
	record := func(s *Store, key string) []byte {
		k := s.Keys[key]
		if k == nil || k.Str == nil {
			return nil
		}
		return MarshalState(TypeString, k.Str, nil)
	}

	t.Run("merges like the model", func(t *testing.T) {
		t0 = t
		sgp, fra := NewStore("sgp"), NewStore("fra")
		for i, gen := range []func() *Op{
			func() *Op { return set(sgp, "k", "a") },
			func() *Op { return set(sgp, "k", "2") },
			func() *Op {
				return write(sgp, "k", func(k *Key, st Stamp) (*Op, error) { op, _, err := k.IncrBy("k", 3, st); return op, err })
			},
			func() *Op { return set(sgp, "k", "7") },
			func() *Op {
				return write(sgp, "k", func(k *Key, st Stamp) (*Op, error) { op, _, err := k.IncrBy("k", 5, st); return op, err })
			},
		} {
			op := gen()
			before := record(fra, "k")
			got, ok := MergeStringRecord(before, op)
			if !ok {
				t.Fatalf("op %d: declined", i)
			}
			fra.Apply(op)
			if want := record(fra, "k"); !bytes.Equal(got, want) {
				t.Fatalf("op %d: record %x, model %x", i, got, want)
			}
		}
		if v, _ := fra.Keys["k"].Str.StringValue(); v != "12" {
			t.Fatalf("value %q, want 12 (SET 7, then INCRBY 5)", v)
		}
	})

	t.Run("declines", func(t *testing.T) {
		t0 = t
		sgp, fra := NewStore("sgp"), NewStore("fra")
		fra.Apply(set(fra, "c", "from fra")) // fra's own entry: sgp's write did not see it
		concurrent := set(sgp, "c", "from sgp")
		withTTL := write(sgp, "t", func(k *Key, st Stamp) (*Op, error) {
			op, _, _, _, err := k.Set("t", "v", SetOpts{Deadline: now + 60_000}, st)
			return op, err
		})
		hash := write(sgp, "h", func(k *Key, st Stamp) (*Op, error) {
			op, _, err := k.HSet("h", []Field{{Name: "f", Val: "v"}}, st)
			return op, err
		})
		set(sgp, "d", "x")
		del := write(sgp, "d", func(k *Key, st Stamp) (*Op, error) { op, _ := k.Del("d", st); return op, nil })
		withReg := MarshalState(TypeString, &Elem{}, &Expiry{Entries: []ExpEntry{{Dot: Dot{Region: "fra", Seq: 1}, Deadline: now}}})
		for _, c := range []struct {
			name string
			rec  []byte
			op   *Op
		}{
			{"conflict", record(fra, "c"), concurrent},
			{"op with expiry", nil, withTTL},
			{"other type", nil, hash},
			{"not live afterwards", MarshalState(TypeString, sgp.Keys["d"].Str, nil), del},
			{"record with expiry register", withReg, set(sgp, "r", "v")},
			{"corrupt record", []byte{0x92, 0x05}, set(sgp, "r", "w")},
		} {
			if out, ok := MergeStringRecord(c.rec, c.op); ok {
				t.Errorf("%s: merged to %x, want declined", c.name, out)
			}
		}
	})
}

// BenchmarkFastApply is the child's part of a fast remote apply of one
// string write: decode the op, merge it into the record read; with the
// model's structures and in place.
func BenchmarkFastApply(b *testing.B) {
	const now = 1_764_000_000_000
	sgp := NewStore("sgp")
	var raw [][]byte
	for i := range 2 {
		op, err := sgp.Write("key:000000001234", now+int64(i), func(k *Key, st Stamp) (*Op, error) {
			op, _, _, _, err := k.Set("key:000000001234", "xxx", SetOpts{}, st)
			return op, err
		})
		if err != nil {
			b.Fatal(err)
		}
		enc, err := op.MarshalBinary()
		if err != nil {
			b.Fatal(err)
		}
		raw = append(raw, enc)
	}
	first, err := UnmarshalOp(raw[0])
	if err != nil {
		b.Fatal(err)
	}
	rec, ok := MergeStringRecord(nil, first)
	if !ok {
		b.Fatal("declined")
	}
	b.Run("model", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			op, err := UnmarshalOp(raw[1])
			if err != nil {
				b.Fatal(err)
			}
			if _, ok := MergeStringRecord(rec, op); !ok {
				b.Fatal("declined")
			}
		}
	})
	b.Run("in place", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			set, ok := ParseStringSet(raw[1])
			if !ok {
				b.Fatal("not a plain write")
			}
			if _, ok, handled := MergeStringSet(rec, &set); !ok || !handled {
				b.Fatal("declined")
			}
		}
	})
}

// TestPropMergeStringSet: over random histories of every kind of write on
// a few keys by 3-5 regions, every delivery of an op to a region is also
// tried with the in-place fast merge on the region's record of the key:
// ParseStringSet takes exactly the plain string writes, and wherever
// MergeStringSet answers it returns what MergeStringRecord returns, byte
// for byte. It must answer for most of them.
func TestPropMergeStringSet(t *testing.T) {
	t.Parallel()
	var sets, answered, merged int
	rapid.Check(t, func(t *rapid.T) {
		w := newWorld(t, 3, 5, rapid.Bool().Draw(t, "fifo"))
		w.beforeDeliver = func(d int, b []byte) {
			op := mustDecode(t, b)
			set, ok := ParseStringSet(b)
			isSet := len(op.Elems) == 1 && op.Exp == nil && op.Elems[0].Type == TypeString && op.Elems[0].Kind == KindSet
			if ok != isSet {
				t.Fatalf("ParseStringSet(%+v) = %v", op, ok)
			}
			if !ok {
				return
			}
			if set.ID != op.ID || set.TS != op.TS || set.Key != op.Key || set.Val != op.Elems[0].Val || set.nrm != len(op.Elems[0].Rm) {
				t.Fatalf("ParseStringSet: %+v, op %+v", set, op)
			}
			var rec []byte
			if k := w.stores[d].Keys[op.Key]; k != nil && k.Str != nil {
				rec = MarshalState(TypeString, k.Str, nil)
			}
			got, gotOK, handled := MergeStringSet(rec, &set)
			want, wantOK := MergeStringRecord(rec, op)
			sets++
			if !handled {
				return
			}
			answered++
			if gotOK != wantOK || !bytes.Equal(got, want) {
				t.Fatalf("%v into %x: fast %x %v, model %x %v", op.ID, rec, got, gotOK, want, wantOK)
			}
			if gotOK {
				merged++
			}
		}
		for range rapid.IntRange(30, 150).Draw(t, "steps") {
			w.step(allKinds, false)
		}
		w.deliverAll()
	})
	if answered < sets*9/10 || merged == 0 {
		t.Fatalf("the fast merge answered %d of %d string writes (%d merged)", answered, sets, merged)
	}
	t.Logf("%d string writes delivered, %d answered by the fast merge, %d of them merged", sets, answered, merged)
}

// FuzzMergeStringSet feeds the in-place merge arbitrary ops and records, as
// a corrupt op on a channel or a damaged record in Redis would: neither
// ParseStringSet nor MergeStringSet may panic; ParseStringSet takes only
// what UnmarshalOp decodes to the same plain string write; and wherever
// MergeStringSet answers, it returns what MergeStringRecord returns for
// the decoded op, byte for byte.
func FuzzMergeStringSet(f *testing.F) {
	recs := [][]byte{nil}
	base := fuzzBase(f)
	for _, name := range base.KeyNames() {
		if k := base.Keys[name]; k.Str != nil {
			recs = append(recs, MarshalState(TypeString, k.Str, nil))
		}
	}
	for i, op := range seedOps(f) {
		f.Add(recs[i%len(recs)], mustMarshal(f, op))
	}
	f.Fuzz(func(t *testing.T, rec, b []byte) {
		set, ok := ParseStringSet(b)
		if !ok {
			return
		}
		op, err := UnmarshalOp(b)
		if err != nil {
			t.Fatalf("ParseStringSet took an op UnmarshalOp refuses (%v): %x", err, b)
		}
		if len(op.Elems) != 1 || op.Exp != nil || op.Elems[0].Type != TypeString || op.Elems[0].Kind != KindSet ||
			set.ID != op.ID || set.TS != op.TS || set.Key != op.Key || set.Val != op.Elems[0].Val || set.nrm != len(op.Elems[0].Rm) {
			t.Fatalf("ParseStringSet: %+v, the op decodes as %s", set, fmtOp(op))
		}
		got, gotOK, handled := MergeStringSet(rec, &set)
		if !handled {
			return
		}
		want, wantOK := MergeStringRecord(rec, op)
		if gotOK != wantOK || !bytes.Equal(got, want) {
			t.Fatalf("%v into %x: in place %x %v, model %x %v", op.ID, rec, got, gotOK, want, wantOK)
		}
	})
}
