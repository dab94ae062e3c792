package crdt

import (
	"math/rand/v2"
	"testing"
)

// checkStringRecord holds StringRecordValue to the full decoder: where it
// answers (fast), the answer is UnmarshalState + StringValue's.
func checkStringRecord(t *testing.T, b []byte) (fast bool) {
	t.Helper()
	v, ok, fast := StringRecordValue(string(b))
	if !fast {
		return false
	}
	e, _, err := UnmarshalState(TypeString, b)
	if err != nil {
		// A record the full decoder refuses may still have a readable
		// winner; the fast reader only ever sees records the engine wrote.
		return true
	}
	wv, wok := e.StringValue()
	if v != wv || ok != wok {
		t.Fatalf("StringRecordValue(%x) = %q, %v; the full decoder says %q, %v", b, v, ok, wv, wok)
	}
	return true
}

// TestStringRecordValueMatchesDecoder: random string states, with and
// without counter runs, removal contexts and expiry parts, give the same
// visible value through the fast reader as through the full decoder, and
// the fast reader answers for every record without counter runs.
func TestStringRecordValueMatchesDecoder(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	regions := []string{"fra", "iad", "sgp", "syd"}
	vals := []string{"", "x", "12", "-7", "3.5", "a longer value of more than thirty-one bytes, to use str8"}
	fastN := 0
	for i := 0; i < 5000; i++ {
		e := &Elem{}
		for _, reg := range regions {
			if r.IntN(2) == 0 {
				continue
			}
			// times close together, so that ms and lc ties are met
			e.Entries = append(e.Entries, Entry{
				Dot: Dot{Region: reg, Seq: uint64(r.IntN(1 << 20))},
				Ms:  int64(1_700_000_000_000 + r.IntN(3)), Lc: uint32(r.IntN(3)),
				Val: vals[r.IntN(len(vals))],
			})
			if r.IntN(4) == 0 {
				e.Entries[len(e.Entries)-1].Ms = int64(r.IntN(300)) - 30 // small and negative forms
			}
		}
		if r.IntN(3) == 0 {
			e.Ctr = map[string]Run{regions[r.IntN(4)]: {Seq: uint64(r.IntN(9) + 1), Start: 1, I: int64(r.IntN(100)), F: float64(r.IntN(2)) / 2}}
		}
		if r.IntN(2) == 0 {
			e.Rm = map[string]Run{regions[r.IntN(4)]: {Seq: uint64(r.IntN(9) + 1)}}
		}
		var x *Expiry
		if r.IntN(3) == 0 {
			x = &Expiry{Entries: []ExpEntry{{Dot: Dot{Region: "fra", Seq: 3}, Deadline: 1_800_000_000_000}}, Rm: Vector{"iad": 2}}
		}
		b := MarshalState(TypeString, e, x)
		fast := checkStringRecord(t, b)
		if !fast && len(e.Ctr) == 0 {
			t.Fatalf("no fast answer for a record without counter runs: %x", b)
		}
		if fast {
			fastN++
		}
	}
	if fastN < 1000 {
		t.Fatalf("only %d records read by the fast path", fastN)
	}
	// Records that are not state records at all are left to the decoder.
	for _, b := range [][]byte{nil, {0x90}, {0x92, 0x02, 0x90}, {0xc0}, {0x92, 0x01, 0x91, 0x95}, []byte("plain")} {
		if _, _, fast := StringRecordValue(string(b)); fast {
			t.Fatalf("StringRecordValue(%x) answered for a malformed record", b)
		}
	}
}

func FuzzStringRecordValue(f *testing.F) {
	for _, s := range seedStates(f) {
		if s.t == TypeString {
			f.Add(s.b)
		}
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		checkStringRecord(t, b)
	})
}

// BenchmarkStringRecordValue compares the in-place reader with the full
// decoder on the record of a string written once by SET.
func BenchmarkStringRecordValue(b *testing.B) {
	rec := MarshalState(TypeString, &Elem{Entries: []Entry{{Dot: Dot{Region: "sgp", Seq: 123456}, Ms: 1_800_000_000_000, Val: "xxx"}}}, nil)
	b.Run("fast", func(b *testing.B) {
		s := string(rec)
		for b.Loop() {
			if _, ok, fast := StringRecordValue(s); !ok || !fast {
				b.Fatal("no value")
			}
		}
	})
	b.Run("full", func(b *testing.B) {
		for b.Loop() {
			e, _, err := UnmarshalState(TypeString, rec)
			if err != nil {
				b.Fatal(err)
			}
			if _, ok := e.StringValue(); !ok {
				b.Fatal("no value")
			}
		}
	})
}
