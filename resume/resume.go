package resume

import (
	"errors"
	"fmt"
)

// ErrGap is returned when the ops a destination needs are no longer in the
// origin's stream (retention exceeded): the channel must stop and the
// region be rebuilt.
var ErrGap = errors.New("resume: ops needed are no longer in the origin's stream")

// GapError describes a gap: the destination needs Need, the stream holds
// from First on.
type GapError struct {
	Origin string
	Need   uint64 // the first sequence number the destination needs
	First  uint64 // the first sequence number the stream still holds
}

func (e *GapError) Error() string {
	return fmt.Sprintf("resume: origin %s: need op %d but the stream starts at %d (retention exceeded); rebuild this region from a peer",
		e.Origin, e.Need, e.First)
}

// Unwrap makes errors.Is(err, ErrGap) true.
func (e *GapError) Unwrap() error { return ErrGap }

// Plan returns the stream sequence a channel from origin must start at,
// given the destination's applied sequence for that origin and the stream's
// first and last sequence. It fails with a *GapError when ops after applied
// have aged out of the stream. An empty stream has first == last+1.
func Plan(origin string, applied, first, last uint64) (uint64, error) {
	need := applied + 1
	if last >= need && first > need {
		return 0, &GapError{Origin: origin, Need: need, First: first}
	}
	if last < applied && last != 0 {
		// The destination has applied ops the stream never held: the
		// origin's stream was recreated or the origin's sequence went back.
		return 0, fmt.Errorf("resume: origin %s: destination applied up to %d but the stream ends at %d; the origin's history was lost, rebuild it", origin, applied, last)
	}
	return need, nil
}

// CheckNext checks a message's stream sequence against the next expected
// one. It reports skip for a sequence already applied (redelivery) and a
// *GapError for a jump (messages expired while in flight).
func CheckNext(origin string, expect, got uint64) (skip bool, err error) {
	switch {
	case got < expect:
		return true, nil
	case got > expect:
		return false, &GapError{Origin: origin, Need: expect, First: got}
	}
	return false, nil
}
