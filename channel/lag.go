package channel

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// Lag is a channel's lag measured at one moment.
type Lag struct {
	// Applied is the destination's applied sequence for the origin (its
	// applied vector, the authority on what it holds).
	Applied uint64
	// Last is the last sequence in the origin's stream.
	Last uint64
	// Ops is the number of ops in the origin's stream that the destination
	// has not applied: Last - Applied.
	Ops uint64
	// Age is how long the oldest of those ops has been in the origin's
	// stream (0 when Ops is 0). It compares this host's clock with the
	// origin NATS server's, so clock skew between them adds to it.
	Age time.Duration
}

// MeasureLag measures the channel's lag now, from the destination's applied
// vector and the origin's stream. Unlike the lag figures of Status, which
// are those of the last applied batch, it also sees ops that arrived while
// the channel is paused, throttled, stuck or restarting. It makes one round
// trip to the destination's Redis and one or two to the origin's JetStream;
// bound it with ctx (an unreachable origin makes it wait for ctx).
func (r *Receiver) MeasureLag(ctx context.Context) (Lag, error) {
	pos, err := r.applier.Position(ctx)
	if err != nil {
		return Lag{}, fmt.Errorf("channel: applied vector of %s: %w", r.cfg.Dest, err)
	}
	lag := Lag{Applied: pos.Applied[r.cfg.Origin]}
	stream, err := r.js.Stream(ctx, StreamName(r.cfg.Instance, r.cfg.Origin))
	if err != nil {
		return lag, fmt.Errorf("channel: stream of %s: %w", r.cfg.Origin, err)
	}
	lag.Last = stream.CachedInfo().State.LastSeq
	if lag.Last <= lag.Applied {
		return lag, nil
	}
	lag.Ops = lag.Last - lag.Applied
	msg, err := stream.GetMsg(ctx, lag.Applied+1)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		// Aged out of the stream: a gap the receiver reports as
		// needs-rebuild. The oldest op still held is a lower bound.
		first := stream.CachedInfo().State.FirstSeq
		if first == 0 || first > lag.Last {
			return lag, nil
		}
		msg, err = stream.GetMsg(ctx, first)
	}
	if err != nil {
		return lag, fmt.Errorf("channel: op %d of %s: %w", lag.Applied+1, r.cfg.Origin, err)
	}
	lag.Age = max(0, time.Since(msg.Time))
	return lag, nil
}
