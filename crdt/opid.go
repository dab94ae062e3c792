package crdt

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// OpID names an op: its origin region and the origin's sequence number. The
// sequence starts at 1 and is strictly increasing and gap-free per origin, so
// an OpID is never issued twice and a missing number is a detectable gap.
type OpID struct {
	Region string
	Seq    uint64
}

// String renders the OpID as "region:seq". It is also the JetStream message id.
func (id OpID) String() string { return id.Region + ":" + strconv.FormatUint(id.Seq, 10) }

// ParseOpID parses the "region:seq" form produced by String.
func ParseOpID(s string) (OpID, error) {
	i := strings.LastIndexByte(s, ':')
	if i <= 0 {
		return OpID{}, fmt.Errorf("%w: op id %q", ErrCorrupt, s)
	}
	seq, err := strconv.ParseUint(s[i+1:], 10, 64)
	if err != nil || seq == 0 {
		return OpID{}, fmt.Errorf("%w: op id %q", ErrCorrupt, s)
	}
	return OpID{Region: s[:i], Seq: seq}, nil
}

// Dot is the OpID of the op that wrote a piece of state.
type Dot = OpID

// Vector maps a region to a sequence number: an applied vector (every op of
// the region up to that number has been applied) or a removal context.
type Vector map[string]uint64

// Covers reports whether the vector includes the dot.
func (v Vector) Covers(d Dot) bool { return d.Seq <= v[d.Region] }

// Merge raises v to the pointwise maximum of v and w.
func (v Vector) Merge(w Vector) {
	for r, s := range w {
		if s > v[r] {
			v[r] = s
		}
	}
}

// Clone returns a copy of v.
func (v Vector) Clone() Vector {
	c := make(Vector, len(v))
	for r, s := range v {
		c[r] = s
	}
	return c
}

// Min returns the pointwise minimum of the vectors over the regions of the
// first one (a region missing from any vector counts as 0).
func Min(vs ...Vector) Vector {
	if len(vs) == 0 {
		return Vector{}
	}
	m := vs[0].Clone()
	for _, v := range vs[1:] {
		for r, s := range m {
			if v[r] < s {
				m[r] = v[r]
			}
		}
	}
	return m
}

// String renders the vector with regions in sorted order.
func (v Vector) String() string {
	rs := make([]string, 0, len(v))
	for r := range v {
		rs = append(rs, r)
	}
	sort.Strings(rs)
	var b strings.Builder
	b.WriteByte('{')
	for i, r := range rs {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(r + ":" + strconv.FormatUint(v[r], 10))
	}
	b.WriteByte('}')
	return b.String()
}
