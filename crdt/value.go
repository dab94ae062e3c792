package crdt

import (
	"math"
	"sort"
	"strconv"
)

// MaxSafeInt is the largest integer every region computes exactly. Counters
// are kept within ±MaxSafeInt; an increment beyond it is refused with
// ErrOverflow (Redis's own limit is the int64 range).
const MaxSafeInt = 1<<53 - 1

// numKind classifies a string as Redis-style number.
type numKind uint8

const (
	numNone numKind = iota
	numInt
	numFloat
)

// parseNum classifies s: an integer in canonical form ("0", "-12", no
// leading zeros or "+") within ±MaxSafeInt is numInt; any other finite
// decimal number ("1.5", "-2e3", "007", an integer beyond the safe range) is
// numFloat; everything else is numNone. The Lua scripts use the same rules.
func parseNum(s string) (numKind, int64, float64) {
	if isCanonicalInt(s) {
		if n, err := strconv.ParseInt(s, 10, 64); err == nil && n >= -MaxSafeInt && n <= MaxSafeInt {
			return numInt, n, float64(n)
		}
	}
	if isDecimal(s) {
		if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsInf(f, 0) {
			return numFloat, 0, f
		}
	}
	return numNone, 0, 0
}

func isCanonicalInt(s string) bool {
	if s == "" || len(s) > 20 {
		return false
	}
	i := 0
	if s[0] == '-' {
		i = 1
	}
	if i == len(s) || (s[i] == '0' && len(s) > i+1) || (s[i] == '0' && i == 1) {
		return false
	}
	for ; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// isDecimal accepts [-]digits[.digits][e[+-]digits] with at least one digit
// in the mantissa: the intersection of what Redis and Lua parse alike.
func isDecimal(s string) bool {
	i, n := 0, len(s)
	if i < n && (s[i] == '-' || s[i] == '+') {
		i++
	}
	digits := 0
	for i < n && s[i] >= '0' && s[i] <= '9' {
		i++
		digits++
	}
	if i < n && s[i] == '.' {
		i++
		for i < n && s[i] >= '0' && s[i] <= '9' {
			i++
			digits++
		}
	}
	if digits == 0 {
		return false
	}
	if i < n && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < n && (s[i] == '-' || s[i] == '+') {
			i++
		}
		ed := 0
		for i < n && s[i] >= '0' && s[i] <= '9' {
			i++
			ed++
		}
		if ed == 0 {
			return false
		}
	}
	return i == n
}

// FormatFloat renders a float the way every region does: the shortest of
// %.15g, %.16g and %.17g that reads back as the same number, so that the Lua
// scripts, which only have C's printf, produce the same bytes.
func FormatFloat(f float64) string {
	if math.IsInf(f, 1) {
		return "inf"
	}
	if math.IsInf(f, -1) {
		return "-inf"
	}
	var s string
	for p := 15; p <= 17; p++ {
		s = strconv.FormatFloat(f, 'g', p, 64)
		if g, _ := strconv.ParseFloat(s, 64); g == f {
			break
		}
	}
	return s
}

// StringValue returns the value a string or hash field shows: the winning
// register entry with the increments no remove observed added on top. A
// value that is not a number hides the increments (they are kept, and show
// again once a numeric value wins). ok is false when the element is not live.
func (e *Elem) StringValue() (v string, ok bool) {
	w, hasEntry := e.Winner()
	di, df, hasDelta := e.Delta()
	if !hasDelta {
		return w.Val, hasEntry
	}
	kind, bi, bf := numInt, int64(0), 0.0
	if hasEntry {
		kind, bi, bf = parseNum(w.Val)
	}
	switch {
	case kind == numNone:
		return w.Val, true
	case kind == numInt && df == 0:
		return strconv.FormatInt(bi+di, 10), true
	default:
		return FormatFloat(bf + float64(di) + df), true
	}
}

// ScoreValue returns a sorted set member's score: the winning ZADD score (0
// when there is none) plus the increments no remove observed.
func (e *Elem) ScoreValue() (float64, bool) {
	w, hasEntry := e.Winner()
	di, df, hasDelta := e.Delta()
	if !hasEntry && !hasDelta {
		return 0, false
	}
	return w.Score + float64(di) + df, true
}

// Get returns a string key's value at wall time now.
func (k *Key) Get(now int64) (string, bool) {
	if k.Type(now) != TypeString {
		return "", false
	}
	return k.Str.StringValue()
}

// Field is a hash field or a sorted set member with its value.
type Field struct {
	Name  string
	Val   string
	Score float64
}

// HGetAll returns a hash key's live fields sorted by name.
func (k *Key) HGetAll(now int64) []Field {
	if k.Type(now) != TypeHash {
		return nil
	}
	var out []Field
	for n, e := range k.Hash {
		if v, ok := e.StringValue(); ok {
			out = append(out, Field{Name: n, Val: v})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// SMembers returns a set key's live members sorted.
func (k *Key) SMembers(now int64) []string {
	if k.Type(now) != TypeSet {
		return nil
	}
	var out []string
	for n, e := range k.Members {
		if e.Live() {
			out = append(out, n)
		}
	}
	sort.Strings(out)
	return out
}

// ZRange returns a sorted set key's live members in Redis order: by score,
// then by member.
func (k *Key) ZRange(now int64) []Field {
	if k.Type(now) != TypeZSet {
		return nil
	}
	var out []Field
	for n, e := range k.ZSet {
		if s, ok := e.ScoreValue(); ok {
			out = append(out, Field{Name: n, Score: s})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Score != out[j].Score {
			return out[i].Score < out[j].Score
		}
		return out[i].Name < out[j].Name
	})
	return out
}
