package crdt

import (
	"bytes"
	"errors"
	"math"
	"sync"
	"testing"
)

// seedOps returns real ops of every kind, issued by the model: those of the
// documented examples and of a fixed two-region history that covers what
// they leave out (options, floats, TTLs, several fields, removal contexts
// with counter runs).
func seedOps(tb testing.TB) []*Op {
	tb.Helper()
	var ops []*Op
	for _, c := range semCases {
		ops = append(ops, runSemCase(tb, c).ops...)
	}
	a, b := NewStore("sgp"), NewStore("fra-2")
	now := int64(1_700_000_000_000)
	do := func(s *Store, key string, gen func(k *Key, st Stamp) (*Op, error)) {
		tb.Helper()
		now++
		op, err := s.Write(key, now, gen)
		if err != nil {
			tb.Fatalf("seed history: %v", err)
		}
		if op != nil {
			ops = append(ops, op)
		}
	}
	for _, s := range []*Store{a, b} {
		first := len(ops)
		do(s, "str", func(k *Key, st Stamp) (*Op, error) {
			op, _, _, _, err := k.Set("str", "héllo\x00", SetOpts{Deadline: st.Now + 60_000}, st)
			return op, err
		})
		do(s, "n", func(k *Key, st Stamp) (*Op, error) {
			op, _, err := k.IncrBy("n", -1<<50, st)
			return op, err
		})
		do(s, "n", func(k *Key, st Stamp) (*Op, error) {
			op, _, err := k.IncrBy("n", 7, st)
			return op, err
		})
		do(s, "f", func(k *Key, st Stamp) (*Op, error) {
			op, _, err := k.IncrByFloat("f", 1e-300, st)
			return op, err
		})
		do(s, "h", func(k *Key, st Stamp) (*Op, error) {
			op, _, err := k.HSet("h", []Field{{Name: "a", Val: "1"}, {Name: "", Val: ""}, {Name: "c", Val: "x"}}, st)
			return op, err
		})
		do(s, "h", func(k *Key, st Stamp) (*Op, error) {
			op, _, err := k.HIncrByFloat("h", "a", -2.5, st)
			return op, err
		})
		do(s, "z", func(k *Key, st Stamp) (*Op, error) {
			op, _, _, _, err := k.ZAdd("z", ZAddOpts{CH: true}, []Field{{Name: "m", Score: math.Inf(-1)}, {Name: "n", Score: math.Copysign(0, -1)}, {Name: "o", Score: 1.5e300}}, st)
			return op, err
		})
		do(s, "z", func(k *Key, st Stamp) (*Op, error) {
			op, _, _, _, err := k.ZAdd("z", ZAddOpts{Incr: true}, []Field{{Name: "o", Score: 2}}, st)
			return op, err
		})
		do(s, "str", func(k *Key, st Stamp) (*Op, error) {
			op, _ := k.Persist("str", st)
			return op, nil
		})
		for _, op := range ops[first:] {
			if s == b {
				a.Apply(op)
			} else {
				b.Apply(op)
			}
		}
	}
	for _, key := range []string{"str", "n", "f", "h", "z"} {
		do(a, key, func(k *Key, st Stamp) (*Op, error) {
			op, _ := k.Del(key, st)
			return op, nil
		})
	}
	return ops
}

// seedStates returns real state records of every type, with their type.
func seedStates(tb testing.TB) []stateSeed {
	tb.Helper()
	s := NewStore("iad")
	for _, op := range seedOps(tb) {
		s.Apply(op)
	}
	var out []stateSeed
	for _, name := range s.KeyNames() {
		k := s.Keys[name]
		str := k.Str
		if str == nil {
			str = &Elem{}
		}
		out = append(out, stateSeed{TypeString, MarshalState(TypeString, str, &k.Exp)})
		for _, e := range allElemsTyped(k) {
			out = append(out, stateSeed{e.t, MarshalState(e.t, e.e, nil)})
		}
	}
	// A record with every part present, counter runs and expiry included.
	e := &Elem{
		Entries: []Entry{{Dot: Dot{Region: "fra", Seq: 3}, Ms: 10, Lc: 2, Val: "v", Score: 1.5}},
		Ctr:     map[string]Run{"sgp": {Seq: 9, Start: 4, I: -3, F: 0.25}},
		Rm:      map[string]Run{"fra": {Seq: 2, Start: 1, I: 5}, "iad": {Seq: 7}},
	}
	x := &Expiry{Entries: []ExpEntry{{Dot: Dot{Region: "sgp", Seq: 8}, Deadline: Persist}}, Rm: Vector{"fra": 4}}
	for t := TypeString; t <= TypeZSet; t++ {
		out = append(out, stateSeed{t, MarshalState(t, e, x)}, stateSeed{t, MarshalState(t, e, nil)}, stateSeed{t, MarshalState(t, &Elem{}, nil)})
	}
	return out
}

type stateSeed struct {
	t Type
	b []byte
}

type typedElem struct {
	t Type
	e *Elem
}

func allElemsTyped(k *Key) []typedElem {
	var out []typedElem
	for _, c := range []struct {
		t Type
		m map[string]*Elem
	}{{TypeHash, k.Hash}, {TypeSet, k.Members}, {TypeZSet, k.ZSet}} {
		for _, n := range sortedKeys(c.m) {
			out = append(out, typedElem{c.t, c.m[n]})
		}
	}
	return out
}

func mustMarshal(tb testing.TB, op *Op) []byte {
	tb.Helper()
	b, err := op.MarshalBinary()
	if err != nil {
		tb.Fatal(err)
	}
	return b
}

// checkDecodeError requires a decoder error to wrap exactly one of the two
// sentinels.
func checkDecodeError(t *testing.T, err error) {
	t.Helper()
	corrupt, version := errors.Is(err, ErrCorrupt), errors.Is(err, ErrUnsupportedVersion)
	if corrupt == version {
		t.Fatalf("error %v: corrupt=%v version=%v", err, corrupt, version)
	}
}

func FuzzUnmarshalOp(f *testing.F) {
	for _, op := range seedOps(f) {
		f.Add(mustMarshal(f, op))
	}
	f.Add([]byte{})
	f.Add([]byte{0x98, 0x02})
	f.Fuzz(func(t *testing.T, b []byte) {
		id, idErr := PeekID(b)
		if idErr != nil {
			checkDecodeError(t, idErr)
		}
		op, err := UnmarshalOp(b)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		if idErr != nil || id != op.ID {
			t.Fatalf("PeekID = %v, %v; the op decodes with id %v", id, idErr, op.ID)
		}
		enc, err := op.MarshalBinary()
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, err := UnmarshalOp(enc)
		if err != nil {
			t.Fatalf("re-encoded op does not decode: %v\n%x", err, enc)
		}
		if !opsEqual(op, back) {
			t.Fatalf("round trip differs:\n%s\n%s", fmtOp(op), fmtOp(back))
		}
		if enc2 := mustMarshal(t, back); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable:\n%x\n%x", enc, enc2)
		}
		// Whatever a peer sends, applying it must not panic and must be
		// idempotent, on an empty store and on one holding state.
		for _, base := range []*Store{NewStore("zz"), fuzzBase(t)} {
			once, twice := cloneStore(base), cloneStore(base)
			once.Apply(op)
			twice.Apply(op)
			twice.Apply(back)
			if !bytes.Equal(encodeStore(once), encodeStore(twice)) {
				t.Fatalf("applying %s twice differs from once:\n%s\n%s", fmtOp(op), dumpStore(once), dumpStore(twice))
			}
			once.Snapshot(op.TS.Ms)
			once.GC(once.Applied)
		}
	})
}

// fuzzBase is a store holding state of every type, from the seed ops.
func fuzzBase(tb testing.TB) *Store {
	tb.Helper()
	fuzzBaseOnce.Do(func() {
		fuzzBaseStore = NewStore("zz")
		for _, op := range seedOps(tb) {
			fuzzBaseStore.Apply(op)
		}
	})
	return fuzzBaseStore
}

var (
	fuzzBaseOnce  sync.Once
	fuzzBaseStore *Store
)

func FuzzUnmarshalBatch(f *testing.F) {
	ops := seedOps(f)
	for i := 0; i < len(ops); i += 7 {
		b, err := MarshalBatch(ops[i:min(i+7, len(ops))])
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	empty, _ := MarshalBatch(nil)
	f.Add(empty)
	f.Fuzz(func(t *testing.T, b []byte) {
		ops, err := UnmarshalBatch(b)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		enc, err := MarshalBatch(ops)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		back, err := UnmarshalBatch(enc)
		if err != nil {
			t.Fatalf("re-encoded batch does not decode: %v\n%x", err, enc)
		}
		if len(back) != len(ops) {
			t.Fatalf("%d ops, then %d", len(ops), len(back))
		}
		for i := range ops {
			if !opsEqual(ops[i], back[i]) {
				t.Fatalf("op %d differs:\n%s\n%s", i, fmtOp(ops[i]), fmtOp(back[i]))
			}
		}
	})
}

func FuzzUnmarshalState(f *testing.F) {
	for _, s := range seedStates(f) {
		f.Add(uint8(s.t), s.b)
	}
	f.Fuzz(func(t *testing.T, typ uint8, b []byte) {
		tp := Type(1 + typ%4)
		e, x, err := UnmarshalState(tp, b)
		if err != nil {
			checkDecodeError(t, err)
			return
		}
		enc := MarshalState(tp, e, x)
		e2, x2, err := UnmarshalState(tp, enc)
		if err != nil {
			t.Fatalf("re-encoded state does not decode: %v\n%x", err, enc)
		}
		if !elemsEqual(tp, e, e2) || !expiriesEqual(x, x2) {
			t.Fatalf("round trip differs:\n%s %v %v\n%s %v %v", dumpElem(e), x.Entries, x.Rm, dumpElem(e2), x2.Entries, x2.Rm)
		}
		if enc2 := MarshalState(tp, e2, x2); !bytes.Equal(enc, enc2) {
			t.Fatalf("encoding not stable:\n%x\n%x", enc, enc2)
		}
	})
}

// elemsEqual compares two elements of type t as the state record stores
// them (a sorted set entry's score, any other entry's value).
func elemsEqual(t Type, a, b *Elem) bool {
	if len(a.Entries) != len(b.Entries) || !runsEqual(a.Ctr, b.Ctr) || !runsEqual(a.Rm, b.Rm) {
		return false
	}
	for i := range a.Entries {
		x, y := a.Entries[i], b.Entries[i]
		if x.Dot != y.Dot || x.Ms != y.Ms || x.Lc != y.Lc {
			return false
		}
		if t == TypeZSet && !floatEq(x.Score, y.Score) || t != TypeZSet && x.Val != y.Val {
			return false
		}
	}
	return true
}

func expiriesEqual(a, b *Expiry) bool {
	if len(a.Entries) != len(b.Entries) || !vectorsEqual(a.Rm, b.Rm) {
		return false
	}
	for i := range a.Entries {
		if a.Entries[i] != b.Entries[i] {
			return false
		}
	}
	return true
}

// TestWireRoundTrip: every op the model issues, alone and in a batch,
// decodes to an equal op and re-encodes to the same bytes; so does every
// state record.
func TestWireRoundTrip(t *testing.T) {
	ops := seedOps(t)
	for _, op := range ops {
		b := mustMarshal(t, op)
		back, err := UnmarshalOp(b)
		if err != nil {
			t.Fatalf("%s: %v", fmtOp(op), err)
		}
		if !opsEqual(op, back) || !bytes.Equal(b, mustMarshal(t, back)) {
			t.Fatalf("round trip:\n%s\n%s", fmtOp(op), fmtOp(back))
		}
	}
	b, err := MarshalBatch(ops)
	if err != nil {
		t.Fatal(err)
	}
	back, err := UnmarshalBatch(b)
	if err != nil || len(back) != len(ops) {
		t.Fatalf("batch: %v, %d ops of %d", err, len(back), len(ops))
	}
	for i := range ops {
		if !opsEqual(ops[i], back[i]) {
			t.Fatalf("batch op %d:\n%s\n%s", i, fmtOp(ops[i]), fmtOp(back[i]))
		}
	}
	for _, s := range seedStates(t) {
		e, x, err := UnmarshalState(s.t, s.b)
		if err != nil {
			t.Fatalf("state %x: %v", s.b, err)
		}
		if enc := MarshalState(s.t, e, x); !bytes.Equal(enc, s.b) {
			t.Fatalf("state round trip:\n%x\n%x", s.b, enc)
		}
	}
}

// withVersion re-encodes a record (an array whose first element is the
// version) with another version and optionally one more trailing element, as
// a later format might have.
func withVersion(t *testing.T, b []byte, version int64, extra bool) []byte {
	t.Helper()
	// Every record starts with a fixarray header and the fixint version 1.
	if b[0]&0xf0 != 0x90 || b[1] != WireVersion {
		t.Fatalf("unexpected header %x", b[:2])
	}
	n := int(b[0] & 0x0f)
	var out bytes.Buffer
	if extra {
		n++
	}
	out.WriteByte(0x90 | byte(n))
	switch {
	case version >= 0 && version < 128:
		out.WriteByte(byte(version))
	case version < 0 && version >= -32:
		out.WriteByte(byte(version))
	default:
		out.Write([]byte{0xd3, byte(version >> 56), byte(version >> 48), byte(version >> 40), byte(version >> 32), byte(version >> 24), byte(version >> 16), byte(version >> 8), byte(version)})
	}
	out.Write(b[2:])
	if extra {
		out.WriteByte(0xc0) // nil, a field this build does not know
	}
	return out.Bytes()
}

func TestUnsupportedVersion(t *testing.T) {
	ops := seedOps(t)
	op := mustMarshal(t, ops[0])
	batch, err := MarshalBatch(ops[:3])
	if err != nil {
		t.Fatal(err)
	}
	state := MarshalState(TypeString, &Elem{Entries: []Entry{{Dot: Dot{Region: "sgp", Seq: 1}, Val: "v"}}}, nil)
	decoders := map[string]struct {
		b   []byte
		dec func([]byte) error
	}{
		"op":    {op, func(b []byte) error { _, err := UnmarshalOp(b); return err }},
		"id":    {op, func(b []byte) error { _, err := PeekID(b); return err }},
		"batch": {batch, func(b []byte) error { _, err := UnmarshalBatch(b); return err }},
		"state": {state, func(b []byte) error { _, _, err := UnmarshalState(TypeString, b); return err }},
	}
	for name, d := range decoders {
		if err := d.dec(d.b); err != nil {
			t.Fatalf("%s: version 1 rejected: %v", name, err)
		}
		for _, v := range []int64{2, 0, 3, -1, 1 << 40} {
			for _, extra := range []bool{false, true} {
				err := d.dec(withVersion(t, d.b, v, extra))
				if !errors.Is(err, ErrUnsupportedVersion) || errors.Is(err, ErrCorrupt) {
					t.Errorf("%s with version %d (extra field %v): %v, want ErrUnsupportedVersion", name, v, extra, err)
				}
			}
		}
	}
	// An op of version 2 inside a batch of version 1.
	v2 := withVersion(t, op, 2, false)
	b := append([]byte{0x92, 0x01, 0x91}, v2...)
	if _, err := UnmarshalBatch(b); !errors.Is(err, ErrUnsupportedVersion) {
		t.Errorf("batch holding a version 2 op: %v", err)
	}
}

func TestCorruptBytes(t *testing.T) {
	ops := seedOps(t)
	decode := func(b []byte) error { _, err := UnmarshalOp(b); return err }
	for _, op := range ops[:12] {
		b := mustMarshal(t, op)
		for n := range len(b) {
			if err := decode(b[:n]); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("%s truncated to %d bytes: %v", fmtOp(op), n, err)
			}
		}
		if err := decode(append(append([]byte(nil), b...), 0x00)); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("trailing byte: %v", err)
		}
	}
	batch, _ := MarshalBatch(ops[:4])
	for n := range len(batch) {
		if _, err := UnmarshalBatch(batch[:n]); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("batch truncated to %d bytes: %v", n, err)
		}
	}
	for _, s := range seedStates(t)[:8] {
		for n := range len(s.b) {
			if _, _, err := UnmarshalState(s.t, s.b[:n]); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("state %x truncated to %d bytes: %v", s.b, n, err)
			}
		}
	}
	garbage := [][]byte{
		nil,
		[]byte("hello, world"),
		{0xc1},                               // never used in MessagePack
		{0x81, 0x01, 0x01},                   // a map, not an array
		{0x90},                               // an empty array
		{0x98, 0xa1, 0x31},                   // version is a string
		{0x98, 0x01, 0xa3, 'S'},              // truncated region
		{0xdd, 0xff, 0xff, 0xff, 0xff, 0x01}, // a 4G-element array
		{0x98, 0x01, 0xa3, 's', 'g', 'p', 0x00, 0x00, 0x00, 0xa1, 'k', 0x90, 0x90},                               // sequence number 0
		{0x98, 0x01, 0xa3, 'S', 'G', 'P', 0x01, 0x00, 0x00, 0xa1, 'k', 0x90, 0x90},                               // invalid region
		{0x98, 0x01, 0xa3, 's', 'g', 'p', 0x01, 0x00, 0x00, 0xa1, 'k', 0x91, 0x94, 0x09, 0xa0, 0x90, 0x00, 0x90}, // type 9
		{0x98, 0x01, 0xa3, 's', 'g', 'p', 0x01, 0x00, 0x00, 0xa1, 'k', 0x91, 0x94, 0x01, 0xa0, 0x90, 0x05, 0x90}, // kind 5
		{0x98, 0x01, 0xa3, 's', 'g', 'p', 0x01, 0x00, 0x00, 0xa1, 'k', 0x90, 0x92, 0x90, 0xd0, 0xf0},             // deadline below Persist
		{0x98, 0x01, 0xa3, 's', 'g', 'p', 0x01, 0x00, 0xcf, 0, 0, 0, 1, 0, 0, 0, 0, 0xa1, 'k', 0x90, 0x90},       // logical clock beyond 32 bits
	}
	for _, g := range garbage {
		if err := decode(g); !errors.Is(err, ErrCorrupt) {
			t.Errorf("op %x: %v, want ErrCorrupt", g, err)
		}
		if _, err := PeekID(g[:min(len(g), 7)]); !errors.Is(err, ErrCorrupt) {
			t.Errorf("op id %x: %v, want ErrCorrupt", g, err)
		}
		if _, err := UnmarshalBatch(g); !errors.Is(err, ErrCorrupt) {
			t.Errorf("batch %x: %v, want ErrCorrupt", g, err)
		}
		if _, _, err := UnmarshalState(TypeHash, g); !errors.Is(err, ErrCorrupt) {
			t.Errorf("state %x: %v, want ErrCorrupt", g, err)
		}
	}
}
