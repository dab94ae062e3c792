package resume

import (
	"errors"
	"testing"
)

func TestPlan(t *testing.T) {
	cases := []struct {
		name                 string
		applied, first, last uint64
		want                 uint64
		gap, fail            bool
	}{
		{"fresh destination, fresh stream", 0, 1, 0, 1, false, false},
		{"fresh destination, stream from 1", 0, 1, 10, 1, false, false},
		{"caught up", 10, 1, 10, 11, false, false},
		{"behind, still held", 5, 3, 10, 6, false, false},
		{"behind, exactly the first held", 5, 6, 10, 6, false, false},
		{"behind, aged out", 5, 8, 10, 0, true, false},
		{"caught up, everything aged out", 10, 11, 10, 11, false, false},
		{"behind, everything aged out", 5, 11, 10, 0, true, false},
		{"ahead of the stream", 12, 1, 10, 0, false, true},
	}
	for _, c := range cases {
		got, err := Plan("sgp", c.applied, c.first, c.last)
		var ge *GapError
		switch {
		case c.gap:
			if !errors.Is(err, ErrGap) || !errors.As(err, &ge) || ge.Need != c.applied+1 || ge.First != c.first {
				t.Errorf("%s: want gap, got %d %v", c.name, got, err)
			}
		case c.fail:
			if err == nil || errors.Is(err, ErrGap) {
				t.Errorf("%s: want a non-gap error, got %d %v", c.name, got, err)
			}
		default:
			if err != nil || got != c.want {
				t.Errorf("%s: got %d %v, want %d", c.name, got, err, c.want)
			}
		}
	}
}

func TestCheckNext(t *testing.T) {
	if skip, err := CheckNext("fra", 5, 5); skip || err != nil {
		t.Fatalf("expected message: skip=%v err=%v", skip, err)
	}
	if skip, err := CheckNext("fra", 5, 4); !skip || err != nil {
		t.Fatalf("redelivered message: skip=%v err=%v", skip, err)
	}
	if _, err := CheckNext("fra", 5, 7); !errors.Is(err, ErrGap) {
		t.Fatalf("jump: %v", err)
	}
}
