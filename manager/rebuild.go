package manager

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A rebuild refills a region (the target) from a peer: the operator
// records the request on the target's Region (RequestRebuild); the
// target's children see it in the desired state, one of them (the holder
// of the target's "rebuild" lease) stops the target's inbound channels,
// refuses local writes, copies the peer's state (internal/daemon asks the
// peer's children for an export over their control service), merges the
// target's own ops the peer lacked, restarts the channels and reports its
// progress in its heartbeat and its phase here.

// Phases of a rebuild, in order; RebuildDone and RebuildFailed are final.
const (
	RebuildPending   = "pending"   // recorded; no child has taken it yet
	RebuildCopying   = "copying"   // the target's channels are stopped, its writes refused; copying the peer's keys
	RebuildMerging   = "merging"   // the target's own ops that the peer lacked are merged back
	RebuildReplaying = "replaying" // the target serves again; its channels replay from the peer's position
	RebuildDone      = "done"
	RebuildFailed    = "failed"
)

// Errors of rebuilds.
var (
	ErrRebuildRunning = errors.New("manager: a rebuild of this region is running already (wait for it, see `channel-manager region list`)")
	ErrRebuildGone    = errors.New("manager: the rebuild request was replaced or removed")
	ErrPeerBehind     = errors.New("manager: the peer is itself behind: the target would miss ops that no stream holds any more; rebuild from another peer")
)

// Rebuild is a rebuild request of a region and, once a child runs it, its
// phase and outcome. It lives on the target's Region.
type Rebuild struct {
	ID        string    `json:"id"`
	From      string    `json:"from"` // the peer whose state is copied
	Phase     string    `json:"phase"`
	Error     string    `json:"error,omitempty"` // why it failed
	Requested time.Time `json:"requested"`
	// Set by the child that runs it.
	Owner    string            `json:"owner,omitempty"`
	Started  time.Time         `json:"started,omitzero"`
	Finished time.Time         `json:"finished,omitzero"`
	Position map[string]uint64 `json:"position,omitempty"` // the peer's position before the copy (V)
	Keys     int64             `json:"keys,omitempty"`     // keys copied
	Replayed uint64            `json:"replayed,omitempty"` // ops replayed after the copy to reach the target position
	Target   map[string]uint64 `json:"target,omitempty"`   // each origin's stream end when the replay began
}

// Active reports whether the rebuild is not finished (done or failed).
func (r *Rebuild) Active() bool {
	return r != nil && r.Phase != RebuildDone && r.Phase != RebuildFailed
}

// HoldsChannels reports whether the target's inbound channels must stay
// stopped: from the request until the copy and the merge are done.
func (r *Rebuild) HoldsChannels() bool {
	return r != nil && (r.Phase == RebuildPending || r.Phase == RebuildCopying || r.Phase == RebuildMerging)
}

// RebuildProgress is what the child running a rebuild reports in its
// heartbeat.
type RebuildProgress struct {
	ID         string `json:"id"`
	Phase      string `json:"phase"`
	KeysCopied int64  `json:"keys_copied"` // copies imported: a key met in two scan phases counts twice
	KeysTotal  int64  `json:"keys_total"`  // the peer's key count when the copy began (an estimate)
	Bytes      int64  `json:"bytes"`       // bytes copied
	OpsMerged  int64  `json:"ops_merged"`  // own ops merged back
	OpsDone    uint64 `json:"ops_replayed"`
	OpsTarget  uint64 `json:"ops_target"`
	Error      string `json:"error,omitempty"`
}

// RequestRebuild records a rebuild of region id from peer from. Both must
// exist, differ and the peer must not be evicted; a rebuild that is still
// running gives ErrRebuildRunning. An evicted target is readmitted (its
// eviction cleared) and, as for a new region, the channels both ways
// between it and every region that is not evicted are created (existing
// ones keep their controls); it returns the request and the channels
// created. rebuildID names the request (unique).
func (s *Store) RequestRebuild(ctx context.Context, id, from, rebuildID string) (Rebuild, []Channel, error) {
	if err := validatePair(id, from); err != nil {
		if errors.Is(err, ErrChannelToItself) {
			return Rebuild{}, nil, fmt.Errorf("%w: a region cannot be rebuilt from itself (%s)", ErrInvalid, id)
		}
		return Rebuild{}, nil, err
	}
	if rebuildID == "" {
		return Rebuild{}, nil, fmt.Errorf("%w: a rebuild needs an id", ErrInvalid)
	}
	st, err := s.Load(ctx)
	if err != nil {
		return Rebuild{}, nil, err
	}
	if st.Instance == nil {
		return Rebuild{}, nil, fmt.Errorf("%w: %s", ErrNoInstance, s.instance)
	}
	peer, ok := st.Regions[from]
	if !ok {
		return Rebuild{}, nil, fmt.Errorf("%w: %s (the peer)", ErrNoRegion, from)
	}
	if peer.Evicted {
		return Rebuild{}, nil, fmt.Errorf("%w: %s is the peer; an evicted region cannot serve a rebuild", ErrEvicted, from)
	}
	rb := Rebuild{ID: rebuildID, From: from, Phase: RebuildPending, Requested: time.Now().UTC()}
	if _, err := s.UpdateRegion(ctx, id, func(r *Region) error {
		if r.Rebuild.Active() {
			return fmt.Errorf("%w: %s from %s, %s", ErrRebuildRunning, id, r.Rebuild.From, r.Rebuild.Phase)
		}
		r.Rebuild = &rb
		r.Evicted = false
		return nil
	}); err != nil {
		return Rebuild{}, nil, err
	}
	var made []Channel
	for _, other := range st.RegionList() {
		if other.Evicted || other.ID == id {
			continue
		}
		for _, c := range []Channel{{Origin: other.ID, Dest: id}, {Origin: id, Dest: other.ID}} {
			_, err := s.create(ctx, ChannelKey(c.Origin, c.Dest), c)
			switch {
			case errors.Is(err, jetstream.ErrKeyExists):
			case err != nil:
				return rb, made, fmt.Errorf("manager: creating channel %s->%s: %w", c.Origin, c.Dest, err)
			default:
				made = append(made, c)
			}
		}
	}
	s.log.Info().Str("region", id).Str("from", from).Str("rebuild", rebuildID).Int("channels", len(made)).Msg("rebuild requested")
	return rb, made, nil
}

// UpdateRebuild applies f to the rebuild rebuildID of region id and writes
// it back, retrying when another writer changed the region meanwhile. It
// gives ErrRebuildGone when the region no longer carries that request.
func (s *Store) UpdateRebuild(ctx context.Context, id, rebuildID string, f func(*Rebuild) error) (Rebuild, error) {
	var out Rebuild
	var err error
	for attempt := 0; attempt < 10; attempt++ {
		_, err = s.UpdateRegion(ctx, id, func(r *Region) error {
			if r.Rebuild == nil || r.Rebuild.ID != rebuildID {
				return fmt.Errorf("%w: %s of region %s", ErrRebuildGone, rebuildID, id)
			}
			if err := f(r.Rebuild); err != nil {
				return err
			}
			out = *r.Rebuild
			return nil
		})
		if !errors.Is(err, ErrConflict) {
			return out, err
		}
		select {
		case <-ctx.Done():
			return out, ctx.Err()
		case <-time.After(time.Duration(attempt+1) * 20 * time.Millisecond):
		}
	}
	return out, err
}

// StreamRange is what an origin's stream holds: sequences First to Last
// (First = Last+1 when it is empty).
type StreamRange struct {
	First, Last uint64
}

// CheckRebuildPosition checks that a target rebuilt from a copy taken at
// position pos (the peer's applied vector with the peer's own sequence)
// can replay every origin from there: each origin's stream must still hold
// the ops after pos (streams by origin; an origin missing from streams is
// an error). It returns an error wrapping ErrPeerBehind that names every
// origin the peer is behind on.
func CheckRebuildPosition(from string, pos map[string]uint64, origins []string, streams map[string]StreamRange) error {
	var behind []string
	origins = append([]string(nil), origins...)
	sort.Strings(origins)
	for _, o := range origins {
		sr, ok := streams[o]
		if !ok {
			return fmt.Errorf("manager: the stream of %s could not be read", o)
		}
		need := pos[o] + 1
		if sr.Last < need || sr.First <= need {
			continue
		}
		behind = append(behind, fmt.Sprintf("%s has applied %s only up to %d but its stream starts at %d", from, o, pos[o], sr.First))
	}
	if len(behind) > 0 {
		return fmt.Errorf("%w: %s", ErrPeerBehind, strings.Join(behind, "; "))
	}
	return nil
}
