package channel

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/globalreplica/globalreplica/child"
	"github.com/globalreplica/globalreplica/crdt"
)

// Restorer is what RestoreFromStream needs of a region's engine.
// Implemented by *child.Engine.
type Restorer interface {
	Position(ctx context.Context) (child.Position, error)
	Restore(ctx context.Context, last uint64, lastTS crdt.Timestamp, ops [][]byte) (uint64, error)
}

var _ Restorer = (*child.Engine)(nil)

// RestoreFromStream repairs a region's Redis that lost ops the region had
// already issued and shipped — a failover to a replica that lagged, a
// restore from an old snapshot: it first raises the region's sequence
// number and HLC past the newest op in the region's own stream, so that no
// OpID is ever issued twice, then merges the region's own ops that this
// Redis misses from the stream. Run it before any client writes to that
// Redis. It returns the number of ops merged. If the stream no longer holds
// some of the missing ops (retention), the sequence is still raised and the
// error wraps ErrNeedsRebuild: rebuild the region from a peer.
func RestoreFromStream(ctx context.Context, js jetstream.JetStream, eng Restorer, instance, region string) (int, error) {
	st, err := js.Stream(ctx, StreamName(instance, region))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return 0, nil // nothing was ever shipped
	}
	if err != nil {
		return 0, err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return 0, err
	}
	pos, err := eng.Position(ctx)
	if err != nil {
		return 0, err
	}
	last := info.State.LastSeq
	if pos.Seq >= last {
		return 0, nil
	}
	lastMsg, err := st.GetMsg(ctx, last)
	if err != nil {
		return 0, fmt.Errorf("channel: newest op of %s: %w", region, err)
	}
	lastOp, err := crdt.UnmarshalOp(lastMsg.Data)
	if err != nil {
		return 0, fmt.Errorf("channel: newest op of %s: %w", region, err)
	}
	// Raise the sequence first: from here on a new local write cannot reuse
	// an OpID, whatever happens to the rest of the repair.
	if _, err := eng.Restore(ctx, last, lastOp.TS, nil); err != nil {
		return 0, err
	}
	from := pos.Seq + 1
	var lost error
	if info.State.FirstSeq > from {
		lost = fmt.Errorf("%w: ops %s:%d to %s:%d are gone from this region's Redis and from its stream (retention); their effects live in the peers that applied them",
			ErrNeedsRebuild, region, from, region, info.State.FirstSeq-1)
		from = info.State.FirstSeq
	}
	restored, err := MergeRange(ctx, st, eng, from, last, lastOp.TS)
	if err != nil {
		return restored, err
	}
	return restored, lost
}

// MergeRange merges the ops of sequences from to last of a region's own
// stream st into the region's engine (eng.Restore, with the sequence kept
// at least last and the HLC past lastTS, the newest op's), in batches, and
// returns how many it merged.
func MergeRange(ctx context.Context, st jetstream.Stream, eng Restorer, from, last uint64, lastTS crdt.Timestamp) (int, error) {
	if from > last {
		return 0, nil
	}
	cons, err := st.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   from,
	})
	if err != nil {
		return 0, err
	}
	merged := 0
	for seq := from; seq <= last; {
		batch, err := cons.Fetch(min(500, int(last-seq+1)))
		if err != nil {
			return merged, err
		}
		var ops [][]byte
		for msg := range batch.Messages() {
			md, err := msg.Metadata()
			if err != nil {
				return merged, err
			}
			if md.Sequence.Stream > last {
				break
			}
			ops = append(ops, msg.Data())
			seq = md.Sequence.Stream + 1
		}
		if err := batch.Error(); err != nil {
			return merged, err
		}
		if len(ops) == 0 {
			return merged, fmt.Errorf("channel: merging the ops of %s stalled at %d", st.CachedInfo().Config.Name, seq)
		}
		if _, err := eng.Restore(ctx, last, lastTS, ops); err != nil {
			return merged, err
		}
		merged += len(ops)
	}
	return merged, nil
}
