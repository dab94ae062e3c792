package manager

import (
	"context"
	"fmt"
	"time"

	"github.com/globalreplica/globalreplica/channel"
)

// StateUnknown is the state of a channel that no fresh heartbeat reports.
const StateUnknown = "unknown"

// ChannelStatus joins a channel of the desired state with what the
// children of its destination report in their heartbeats. The JSON field
// names are stable: scripts read them (`channel-manager channel status
// --json`).
type ChannelStatus struct {
	Origin string `json:"origin"`
	Dest   string `json:"dest"`
	// Desired controls.
	Paused      bool    `json:"paused"`
	OpsPerSec   float64 `json:"ops_per_sec"`
	BytesPerSec float64 `json:"bytes_per_sec"`
	// Observed: the receiver's state (channel.State*, or StateUnknown),
	// the origin sequence the destination has applied, the origin's last
	// sequence (0 when no child of the origin reports), the lag in ops
	// (origin's last sequence minus applied; the receiver's own count when
	// the origin does not report) and in seconds (age of the oldest op not
	// yet applied, as the receiver last saw it), the apply rate in ops/s
	// and the receiver's last error.
	State      string  `json:"state"`
	AppliedSeq uint64  `json:"applied_seq"`
	OriginSeq  uint64  `json:"origin_seq"`
	LagOps     uint64  `json:"lag_ops"`
	LagSeconds float64 `json:"lag_seconds"`
	ApplyRate  float64 `json:"apply_rate"`
	LastError  string  `json:"last_error"`
	// Child is the owner id of the reporting child process, HeartbeatAge
	// the age of its heartbeat in seconds (-1: none).
	Child        string  `json:"child"`
	HeartbeatAge float64 `json:"heartbeat_age_seconds"`
	// Reason says why the state is unknown.
	Reason string `json:"reason"`
}

// stateRank orders the statuses of one channel reported by several
// children of a region: the child holding the receiver lease reports the
// channel's real state, the others wait in "starting".
func stateRank(state string) int {
	switch state {
	case channel.StateStarting:
		return 1
	case channel.StateStopped:
		return 2
	default:
		return 3
	}
}

// JoinStatus joins channels with heartbeats as seen at now (pure: the
// caller reads both). A channel whose destination has no fresh heartbeat,
// or whose destination's children do not run it, has state StateUnknown
// and a Reason.
func JoinStatus(channels []Channel, beats []Heartbeat, now time.Time) []ChannelStatus {
	fresh := map[string][]Heartbeat{}
	originSeq := map[string]uint64{}
	for _, h := range beats {
		if !h.Fresh(now) {
			continue
		}
		fresh[h.Region] = append(fresh[h.Region], h)
		originSeq[h.Region] = max(originSeq[h.Region], h.Seq)
	}
	out := make([]ChannelStatus, 0, len(channels))
	for _, c := range channels {
		cs := ChannelStatus{
			Origin: c.Origin, Dest: c.Dest, Paused: c.Paused, OpsPerSec: c.OpsPerSec, BytesPerSec: c.BytesPerSec,
			State: StateUnknown, OriginSeq: originSeq[c.Origin], HeartbeatAge: -1,
		}
		var (
			best     *channel.Status
			bestBeat Heartbeat
			newest   Heartbeat
		)
		for _, h := range fresh[c.Dest] {
			if h.Time.After(newest.Time) {
				newest = h
			}
			cs.AppliedSeq = max(cs.AppliedSeq, h.Applied[c.Origin])
			for i := range h.Channels {
				st := &h.Channels[i]
				if st.Origin != c.Origin {
					continue
				}
				if best == nil || stateRank(st.State) > stateRank(best.State) ||
					(stateRank(st.State) == stateRank(best.State) && h.Time.After(bestBeat.Time)) {
					best, bestBeat = st, h
				}
			}
		}
		switch {
		case len(fresh[c.Dest]) == 0:
			cs.Reason = fmt.Sprintf("no fresh heartbeat from a child of %s (none runs, or none is connected to the manager)", c.Dest)
		case best == nil:
			cs.Child, cs.HeartbeatAge = newest.Owner, now.Sub(newest.Time).Seconds()
			cs.Reason = fmt.Sprintf("the children of %s do not run this channel (yet)", c.Dest)
		default:
			cs.Child, cs.HeartbeatAge = bestBeat.Owner, now.Sub(bestBeat.Time).Seconds()
			cs.State, cs.LagOps, cs.LagSeconds, cs.ApplyRate, cs.LastError = best.State, best.LagOps, best.LagSeconds, best.ApplyRate, best.LastError
			cs.AppliedSeq = max(cs.AppliedSeq, best.AppliedSeq)
		}
		if cs.OriginSeq > 0 {
			cs.LagOps = 0
			if cs.OriginSeq > cs.AppliedSeq {
				cs.LagOps = cs.OriginSeq - cs.AppliedSeq
			}
		}
		if cs.LagOps == 0 {
			cs.LagSeconds = 0
		}
		out = append(out, cs)
	}
	return out
}

// Status returns the status of every channel as of now.
func (s *Store) Status(ctx context.Context, now time.Time) ([]ChannelStatus, error) {
	chans, err := s.Channels(ctx)
	if err != nil {
		return nil, err
	}
	beats, err := s.Heartbeats(ctx)
	if err != nil {
		return nil, err
	}
	return JoinStatus(chans, beats, now), nil
}

// StatusOf returns the status of the channel origin → dest as of now, or
// ErrNoChannel (ErrNoRegion when an end is unknown).
func (s *Store) StatusOf(ctx context.Context, origin, dest string, now time.Time) (ChannelStatus, error) {
	c, err := s.GetChannel(ctx, origin, dest)
	if err != nil {
		return ChannelStatus{}, err
	}
	beats, err := s.Heartbeats(ctx)
	if err != nil {
		return ChannelStatus{}, err
	}
	return JoinStatus([]Channel{c}, beats, now)[0], nil
}
