package crdt

// Timestamp is a hybrid logical clock reading: physical milliseconds, a
// logical counter that orders events within one millisecond (or while the
// wall clock stands still or runs backwards), and the region that made it as
// the final tie-break. Timestamps of different regions never compare equal.
type Timestamp struct {
	Ms     int64
	Lc     uint32
	Region string
}

// Compare returns -1, 0 or +1 as t orders before, equal to or after u.
func (t Timestamp) Compare(u Timestamp) int {
	switch {
	case t.Ms != u.Ms:
		return cmpInt(t.Ms, u.Ms)
	case t.Lc != u.Lc:
		return cmpInt(t.Lc, u.Lc)
	case t.Region < u.Region:
		return -1
	case t.Region > u.Region:
		return 1
	}
	return 0
}

// Less reports whether t orders strictly before u.
func (t Timestamp) Less(u Timestamp) bool { return t.Compare(u) < 0 }

// IsZero reports whether t is the zero timestamp.
func (t Timestamp) IsZero() bool { return t == Timestamp{} }

// Clock is a region's hybrid logical clock. The zero value is ready to use.
// Its state is the last timestamp it issued or observed (Ms, Lc).
type Clock struct {
	Ms int64
	Lc uint32
}

// Now issues a timestamp for a local event at wall time wall (ms). The result
// is strictly greater than every timestamp the clock issued or observed
// before, even if the wall clock stands still or jumps backwards.
func (c *Clock) Now(region string, wall int64) Timestamp {
	if wall > c.Ms {
		c.Ms, c.Lc = wall, 0
	} else {
		c.Lc++
	}
	return Timestamp{Ms: c.Ms, Lc: c.Lc, Region: region}
}

// Observe records a timestamp received from another region, so that every
// later local event orders after it: a write made after observing another
// always wins over it.
func (c *Clock) Observe(t Timestamp) {
	if t.Ms > c.Ms || (t.Ms == c.Ms && t.Lc > c.Lc) {
		c.Ms, c.Lc = t.Ms, t.Lc
	}
}

func cmpInt[T int64 | uint32 | uint64](a, b T) int {
	switch {
	case a < b:
		return -1
	case a > b:
		return 1
	}
	return 0
}
