package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/globalreplica/globalreplica/channel"
	"github.com/globalreplica/globalreplica/crdt"
)

// checkStreams checks invariant 1 (unique, gap-free OpIDs) and that nothing
// issued was lost on the way to the stream, on the ops every region issued
// between before and after: each region's stream holds exactly its
// sequences 1 to after.seq, none dropped (retention is days), and the
// message at stream sequence n is the op <region>:n, published with that
// OpID as its message id. An OpID issued twice (after a failover to a
// lagging replica, say) would show as an op whose id disagrees with its
// place, or as a stream that ends before the region's sequence.
func (top *topology) checkStreams(t testing.TB, before, after snapshot) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()
	var checked uint64
	for _, r := range top.regions {
		js, err := jetstream.New(top.natsOf(t, r))
		if err != nil {
			t.Fatalf("JetStream of %s: %v", r.id, err)
		}
		name := channel.StreamName(instanceName, r.id)
		s, err := js.Stream(ctx, name)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		si, err := s.Info(ctx)
		if err != nil {
			t.Fatalf("stream %s info: %v", name, err)
		}
		want := after[r.id].seq
		if si.State.LastSeq != want || si.State.Msgs != want || (want > 0 && si.State.FirstSeq != 1) {
			t.Fatalf("stream %s holds sequences %d to %d (%d messages); the region issued 1 to %d",
				name, si.State.FirstSeq, si.State.LastSeq, si.State.Msgs, want)
		}
		from := before[r.id].seq + 1
		if from > want {
			continue
		}
		n, err := checkOps(ctx, s, r.id, from, want)
		if err != nil {
			t.Fatalf("stream %s: %v", name, err)
		}
		checked += n
	}
	t.Logf("streams: %d new ops checked, every OpID at its own sequence, none missing", checked)
}

// checkOps reads the stream from sequence from to to and checks each op's id.
func checkOps(ctx context.Context, s jetstream.Stream, region string, from, to uint64) (uint64, error) {
	cons, err := s.OrderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy, OptStartSeq: from,
	})
	if err != nil {
		return 0, err
	}
	want := from
	for want <= to {
		batch, err := cons.Fetch(500, jetstream.FetchMaxWait(5*time.Second))
		if err != nil {
			return want - from, err
		}
		got := 0
		for msg := range batch.Messages() {
			got++
			meta, err := msg.Metadata()
			if err != nil {
				return want - from, err
			}
			id, err := crdt.PeekID(msg.Data())
			if err != nil {
				return want - from, fmt.Errorf("message %d: %w", meta.Sequence.Stream, err)
			}
			wantID := crdt.OpID{Region: region, Seq: want}
			if meta.Sequence.Stream != want || id != wantID {
				return want - from, fmt.Errorf("stream sequence %d holds op %s, want %s at sequence %d", meta.Sequence.Stream, id, wantID, want)
			}
			if h := msg.Headers().Get(jetstream.MsgIDHeader); h != id.String() {
				return want - from, fmt.Errorf("op %s was published with message id %q", id, h)
			}
			want++
			if want > to {
				break
			}
		}
		if err := batch.Error(); err != nil {
			return want - from, err
		}
		if got == 0 {
			return want - from, fmt.Errorf("no message at sequence %d", want)
		}
	}
	return to - from + 1, nil
}
