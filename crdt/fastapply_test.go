package crdt

import (
	"bytes"
	"testing"
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
// string write: decode the op, merge it into the record read.
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
}
