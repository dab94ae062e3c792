package manager

import (
	"context"
	"errors"
	"strings"
	"testing"
)

// TestRequestRebuild: a request is recorded on the target, readmits an
// evicted target with its channels, refuses bad input and a second request
// while one runs; UpdateRebuild follows the request by id.
func TestRequestRebuild(t *testing.T) {
	ctx := context.Background()
	s, _ := openStore(t)
	addRegions(t, s, "sgp", "fra", "iad")
	for _, tc := range []struct {
		target, from string
		want         error
	}{
		{"sgp", "sgp", ErrInvalid},
		{"nope", "sgp", ErrNoRegion},
		{"sgp", "nope", ErrNoRegion},
		{"Bad", "sgp", ErrInvalid},
	} {
		if _, _, err := s.RequestRebuild(ctx, tc.target, tc.from, "x"); !errors.Is(err, tc.want) {
			t.Errorf("RequestRebuild(%s, %s) = %v, want %v", tc.target, tc.from, err, tc.want)
		}
	}
	if _, _, err := s.EvictRegion(ctx, "fra"); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RequestRebuild(ctx, "sgp", "fra", "x"); !errors.Is(err, ErrEvicted) {
		t.Fatalf("rebuild from an evicted peer: %v", err)
	}
	rb, made, err := s.RequestRebuild(ctx, "fra", "sgp", "r1")
	if err != nil {
		t.Fatal(err)
	}
	if rb.Phase != RebuildPending || rb.From != "sgp" || channelKeys(made) != "iad>fra fra>iad sgp>fra fra>sgp" {
		t.Fatalf("request = %+v, channels %s", rb, channelKeys(made))
	}
	r, err := s.GetRegion(ctx, "fra")
	if err != nil {
		t.Fatal(err)
	}
	if r.Evicted || r.Rebuild == nil || r.Rebuild.ID != "r1" || !r.Rebuild.HoldsChannels() {
		t.Fatalf("fra = %+v", r)
	}
	if _, _, err := s.RequestRebuild(ctx, "fra", "iad", "r2"); !errors.Is(err, ErrRebuildRunning) {
		t.Fatalf("a second request: %v", err)
	}
	if _, err := s.UpdateRebuild(ctx, "fra", "other", func(*Rebuild) error { return nil }); !errors.Is(err, ErrRebuildGone) {
		t.Fatalf("update of another id: %v", err)
	}
	got, err := s.UpdateRebuild(ctx, "fra", "r1", func(rb *Rebuild) error { rb.Phase = RebuildReplaying; return nil })
	if err != nil || got.Phase != RebuildReplaying || got.HoldsChannels() || !got.Active() {
		t.Fatalf("update = %+v, %v", got, err)
	}
	if _, err := s.UpdateRebuild(ctx, "fra", "r1", func(rb *Rebuild) error { rb.Phase = RebuildDone; return nil }); err != nil {
		t.Fatal(err)
	}
	if _, _, err := s.RequestRebuild(ctx, "fra", "iad", "r2"); err != nil {
		t.Fatalf("a request after the first one finished: %v", err)
	}
}

func TestCheckRebuildPosition(t *testing.T) {
	streams := map[string]StreamRange{
		"sgp": {First: 100, Last: 200}, // aged out below 100
		"fra": {First: 1, Last: 50},
		"iad": {First: 31, Last: 30}, // empty after aging out
	}
	origins := []string{"sgp", "fra", "iad"}
	if err := CheckRebuildPosition("iad", map[string]uint64{"sgp": 99, "fra": 0, "iad": 30}, origins, streams); err != nil {
		t.Fatalf("a peer that is not behind: %v", err)
	}
	err := CheckRebuildPosition("iad", map[string]uint64{"sgp": 50, "fra": 0, "iad": 30}, origins, streams)
	if !errors.Is(err, ErrPeerBehind) || !strings.Contains(err.Error(), "sgp only up to 50 but its stream starts at 100") {
		t.Fatalf("a peer behind on sgp: %v", err)
	}
	if err := CheckRebuildPosition("iad", map[string]uint64{"sgp": 200, "fra": 50, "iad": 30}, append(origins, "lon"), streams); err == nil {
		t.Fatal("an origin whose stream is unknown passed")
	}
}
