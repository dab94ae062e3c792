package crdt

// The state record stores one Elem (and, for a string key, the key's expiry
// register) in Redis, in the same MessagePack dialect as ops:
//
//	state = [version, [entry...], [run...] ctr, [run...] rm, [xentry...], [[region, seq]...] xrm]
//	entry = [region, seq, ms, lc, value|score]
//	xentry = [region, seq, deadline]
//
// Trailing empty arrays are left out, so a plain SET costs one entry.

// MarshalState encodes an element of type t and an optional expiry register.
func MarshalState(t Type, e *Elem, x *Expiry) []byte {
	n := 4
	if x != nil && len(x.Rm) > 0 {
		n = 6
	} else if x != nil && len(x.Entries) > 0 {
		n = 5
	}
	for n > 2 && n <= 4 && stateEmpty(e, n) {
		n--
	}
	w := newBufWriter(64)
	w.stateHead(t, n, e.Entries)
	if n > 2 {
		w.runs(e.Ctr)
	}
	if n > 3 {
		w.runs(e.Rm)
	}
	if n > 4 {
		w.arr(len(x.Entries))
		for _, en := range x.Entries {
			w.arr(3)
			w.str(en.Dot.Region)
			w.uint(en.Dot.Seq)
			w.int(en.Deadline)
		}
	}
	if n > 5 {
		w.vector(x.Rm)
	}
	return w.done()
}

// stateHead writes the start of a state record of n items: its header,
// the version and the entries of an element of type t.
func (w *writer) stateHead(t Type, n int, entries []Entry) {
	w.arr(n)
	w.int(WireVersion)
	w.arr(len(entries))
	for _, en := range entries {
		w.arr(5)
		w.str(en.Dot.Region)
		w.uint(en.Dot.Seq)
		w.int(en.Ms)
		w.uint(uint64(en.Lc))
		if t == TypeZSet {
			w.float(en.Score)
		} else {
			w.str(en.Val)
		}
	}
}

// stateEmpty reports whether the n-th item (2 = ctr, 3 = rm... counted from
// the end of a record of n items) is empty and can be left out.
func stateEmpty(e *Elem, n int) bool {
	switch n {
	case 4:
		return len(e.Rm) == 0
	case 3:
		return len(e.Ctr) == 0
	}
	return false
}

// UnmarshalState decodes a state record of type t.
func UnmarshalState(t Type, b []byte) (*Elem, *Expiry, error) {
	r := newReader(b)
	defer r.release()
	n := r.versioned()
	if r.err == nil && (n < 2 || n > 6) {
		r.fail("state record of %d items", n)
	}
	e := &Elem{}
	x := &Expiry{}
	ne := r.arr()
	for i := 0; i < ne && r.err == nil; i++ {
		if r.arr() != 5 {
			r.fail("entry is not a 5-element array")
			break
		}
		en := Entry{Dot: Dot{Region: r.region(), Seq: r.uint()}, Ms: r.int()}
		lc := r.uint()
		en.Lc = uint32(lc)
		if t == TypeZSet {
			en.Score = r.float()
		} else {
			en.Val = r.str()
		}
		e.Entries = append(e.Entries, en)
	}
	if n > 2 {
		e.Ctr = r.runs()
	}
	if n > 3 {
		e.Rm = r.runs()
	}
	if n > 4 {
		nx := r.arr()
		for i := 0; i < nx && r.err == nil; i++ {
			if r.arr() != 3 {
				r.fail("expiry entry is not a 3-element array")
				break
			}
			x.Entries = append(x.Entries, ExpEntry{Dot: Dot{Region: r.region(), Seq: r.uint()}, Deadline: r.int()})
		}
	}
	if n > 5 {
		x.Rm = r.vector()
	}
	if r.err == nil && r.rd.Len() != 0 {
		r.fail("trailing bytes")
	}
	if r.err != nil {
		return nil, nil, r.err
	}
	sortByRegion(e.Entries)
	return e, x, nil
}
