package crdt

import "testing"

func TestSmokeSetIncr(t *testing.T) {
	a, b := NewStore("a"), NewStore("b")
	op1, _ := a.Write("k", 100, func(k *Key, st Stamp) (*Op, error) {
		op, _, _, _, err := k.Set("k", "10", SetOpts{}, st)
		return op, err
	})
	b.Apply(op1)
	// concurrent: a sets 100, b increments by 5
	op2, _ := a.Write("k", 200, func(k *Key, st Stamp) (*Op, error) {
		op, _, _, _, err := k.Set("k", "100", SetOpts{}, st)
		return op, err
	})
	op3, _ := b.Write("k", 150, func(k *Key, st Stamp) (*Op, error) {
		op, _, err := k.IncrBy("k", 5, st)
		return op, err
	})
	a.Apply(op3)
	b.Apply(op2)
	va, _ := a.Key("k").Get(300)
	vb, _ := b.Key("k").Get(300)
	if va != "105" || vb != "105" {
		t.Fatalf("a=%q b=%q", va, vb)
	}
	// b increments again (observed a's set now), then a deletes concurrently with a new incr on b
	op4, _ := b.Write("k", 400, func(k *Key, st Stamp) (*Op, error) {
		op, _, err := k.IncrBy("k", 1, st)
		return op, err
	})
	op5, _ := a.Write("k", 410, func(k *Key, st Stamp) (*Op, error) {
		op, _ := k.Del("k", st)
		return op, nil
	})
	a.Apply(op4)
	b.Apply(op5)
	va, _ = a.Key("k").Get(500)
	vb, _ = b.Key("k").Get(500)
	if va != "1" || vb != "1" {
		t.Fatalf("after del: a=%q b=%q", va, vb)
	}
	for _, op := range []*Op{op1, op2, op3, op4, op5} {
		bs, err := op.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		back, err := UnmarshalOp(bs)
		if err != nil {
			t.Fatalf("%v: %x", err, bs)
		}
		bs2, _ := back.MarshalBinary()
		if string(bs) != string(bs2) {
			t.Fatalf("round trip differs")
		}
	}
	st := MarshalState(TypeString, a.Key("k").Str, &a.Key("k").Exp)
	e, _, err := UnmarshalState(TypeString, st)
	if err != nil {
		t.Fatal(err)
	}
	if v, _ := e.StringValue(); v != "1" {
		t.Fatalf("state round trip %q", v)
	}
}
