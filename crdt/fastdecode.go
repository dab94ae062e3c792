package crdt

import "math"

// StringRecordValue returns the visible value of a string's state record
// (MarshalState of an Elem of TypeString), as UnmarshalState followed by
// Elem.StringValue would, without building the Elem: for a record without
// counter runs, the common case of every GET, it finds the winning entry
// and returns its value as a substring of rec, allocating nothing.
//
// fast is false when this reader does not answer: the record has counter
// runs (the value is computed from them), or it is not laid out as the
// engine writes it. The caller then decodes rec with UnmarshalState, which
// also reports a corrupt record; v and ok mean nothing in that case.
func StringRecordValue(rec string) (v string, ok, fast bool) {
	p := mpScan{s: rec}
	n := p.arr()
	if n < 2 || n > 6 || p.int() != WireVersion {
		return "", false, false
	}
	ne := p.arr()
	var (
		w     string // winning entry's value
		wReg  string
		wMs   int64
		wLc   int64
		found bool
	)
	for i := 0; i < ne && !p.bad; i++ {
		if p.arr() != 5 {
			return "", false, false
		}
		reg := p.str()
		p.int() // seq
		ms, lc := p.int(), p.int()
		val := p.str()
		if p.bad {
			break
		}
		if !found || ms > wMs || (ms == wMs && (lc > wLc || (lc == wLc && reg > wReg))) {
			w, wReg, wMs, wLc, found = val, reg, ms, lc, true
		}
	}
	if n > 2 && p.arr() != 0 {
		return "", false, false // counter runs: the value is computed
	}
	if p.bad {
		return "", false, false
	}
	return w, found, true
}

// mpScan reads the few MessagePack forms of a state record in place. Any
// form it does not expect sets bad, and every read after that returns zero.
type mpScan struct {
	s   string
	i   int
	bad bool
}

func (p *mpScan) take(n int) string {
	if p.bad || n < 0 || len(p.s)-p.i < n {
		p.bad = true
		return ""
	}
	s := p.s[p.i : p.i+n]
	p.i += n
	return s
}

func (p *mpScan) code() byte {
	b := p.take(1)
	if p.bad {
		return 0
	}
	return b[0]
}

func (p *mpScan) be(n int) uint64 {
	b := p.take(n)
	if p.bad {
		return 0
	}
	var x uint64
	for i := 0; i < n; i++ {
		x = x<<8 | uint64(b[i])
	}
	return x
}

// arr reads an array header and returns its length (-1 if not an array).
func (p *mpScan) arr() int {
	c := p.code()
	switch {
	case p.bad:
		return -1
	case c >= 0x90 && c <= 0x9f:
		return int(c & 0x0f)
	case c == 0xdc:
		return int(p.be(2))
	case c == 0xdd:
		return int(p.be(4))
	}
	p.bad = true
	return -1
}

// str reads a string (not nil, not binary).
func (p *mpScan) str() string {
	c := p.code()
	switch {
	case p.bad:
		return ""
	case c >= 0xa0 && c <= 0xbf:
		return p.take(int(c & 0x1f))
	case c == 0xd9:
		return p.take(int(p.be(1)))
	case c == 0xda:
		return p.take(int(p.be(2)))
	case c == 0xdb:
		return p.take(int(p.be(4)))
	}
	p.bad = true
	return ""
}

// int reads an integer of any width that fits an int64.
func (p *mpScan) int() int64 {
	c := p.code()
	switch {
	case p.bad:
		return 0
	case c <= 0x7f:
		return int64(c)
	case c >= 0xe0:
		return int64(int8(c))
	case c == 0xcc:
		return int64(p.be(1))
	case c == 0xcd:
		return int64(p.be(2))
	case c == 0xce:
		return int64(p.be(4))
	case c == 0xcf:
		u := p.be(8)
		if u > math.MaxInt64 {
			p.bad = true
			return 0
		}
		return int64(u)
	case c == 0xd0:
		return int64(int8(p.be(1)))
	case c == 0xd1:
		return int64(int16(p.be(2)))
	case c == 0xd2:
		return int64(int32(p.be(4)))
	case c == 0xd3:
		return int64(p.be(8))
	}
	p.bad = true
	return 0
}
