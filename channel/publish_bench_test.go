package channel

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/globalreplica/globalreplica/crdt"
	"github.com/globalreplica/globalreplica/internal/testnats"
)

// BenchmarkPublishFloor measures what JetStream alone costs per op on the
// shipping path: ops of the shipper's size published into a region's
// stream (file storage, an embedded server in this process) in windows of
// 1,000, with no Redis and no child. It reports the CPU of this process
// (client and server) per op: the floor under any local write path that
// ships one JetStream message per op on this machine.
//
//   - shipper: as the shipper publishes (asynchronously, each op with its
//     OpID as the message id and the expected last sequence);
//   - msgid-only, plain: without the expected sequence, and without the
//     message id too, to show what each costs;
//   - atomic-batch: each window as one atomic batch (NATS 2.12+, the stream
//     allowing it), each op with its message id, one acknowledgement per
//     batch: fewer acknowledgements, the same storage per op.
func BenchmarkPublishFloor(b *testing.B) {
	// About the size of the op of a SET of a 16-byte key to a 3-byte value.
	op := make([]byte, 56)
	const window = 1000
	id := func(seq int) string { return crdt.OpID{Region: "sgp", Seq: uint64(seq)}.String() }
	async := func(msgID, expect bool) func(b *testing.B, nc *nats.Conn, js jetstream.JetStream, subject string) {
		return func(b *testing.B, _ *nats.Conn, js jetstream.JetStream, subject string) {
			futures := make([]jetstream.PubAckFuture, 0, window)
			for seq := 1; seq <= b.N; {
				futures = futures[:0]
				for ; seq <= b.N && len(futures) < window; seq++ {
					var opts []jetstream.PublishOpt
					if msgID {
						opts = append(opts, jetstream.WithMsgID(id(seq)))
					}
					if expect {
						opts = append(opts, jetstream.WithExpectLastSequence(uint64(seq-1)))
					}
					f, err := js.PublishMsgAsync(&nats.Msg{Subject: subject, Data: op}, opts...)
					if err != nil {
						b.Fatal(err)
					}
					futures = append(futures, f)
				}
				for _, f := range futures {
					select {
					case <-f.Ok():
					case err := <-f.Err():
						b.Fatal(err)
					case <-time.After(10 * time.Second):
						b.Fatal("no acknowledgement")
					}
				}
			}
		}
	}
	// atomicBatch publishes each window as an atomic batch: every message
	// carries the batch id and its place in the batch, the last one also
	// the commit, sent as a request whose reply is the batch's
	// acknowledgement (or its error).
	atomicBatch := func(b *testing.B, nc *nats.Conn, _ jetstream.JetStream, subject string) {
		for first, batch := 1, 1; first <= b.N; first, batch = first+window, batch+1 {
			last := min(first+window-1, b.N)
			for seq := first; seq <= last; seq++ {
				m := nats.NewMsg(subject)
				m.Data = op
				m.Header.Set("Nats-Batch-Id", "b"+strconv.Itoa(batch))
				m.Header.Set("Nats-Batch-Sequence", strconv.Itoa(seq-first+1))
				m.Header.Set(jetstream.MsgIDHeader, id(seq))
				if seq < last {
					if err := nc.PublishMsg(m); err != nil {
						b.Fatal(err)
					}
					continue
				}
				m.Header.Set("Nats-Batch-Commit", "1")
				r, err := nc.RequestMsg(m, 10*time.Second)
				if err != nil {
					b.Fatal(err)
				}
				var ack struct {
					Error *jetstream.APIError `json:"error"`
				}
				if err := json.Unmarshal(r.Data, &ack); err != nil || ack.Error != nil {
					b.Fatalf("batch %d: %s", batch, r.Data)
				}
			}
		}
	}
	for _, bc := range []struct {
		name    string
		atomic  bool
		publish func(b *testing.B, nc *nats.Conn, js jetstream.JetStream, subject string)
	}{
		{"shipper", false, async(true, true)},
		{"msgid-only", false, async(true, false)},
		{"plain", false, async(false, false)},
		{"atomic-batch", true, atomicBatch},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ns := testnats.Start(b, "floor")
			nc, js := ns.Connect()
			ctx := context.Background()
			stream, err := EnsureStream(ctx, js, StreamConfig{Instance: "bench", Region: "sgp"})
			if err != nil {
				b.Fatal(err)
			}
			if bc.atomic {
				cfg := stream.CachedInfo().Config
				cfg.AllowAtomicPublish = true
				if stream, err = js.UpdateStream(ctx, cfg); err != nil {
					b.Fatal(err)
				}
			}
			cpu0 := cpuTime()
			b.ResetTimer()
			bc.publish(b, nc, js, Subject("bench", "sgp"))
			b.StopTimer()
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
			info, err := stream.Info(ctx)
			if err != nil {
				b.Fatal(err)
			}
			if info.State.Msgs != uint64(b.N) {
				b.Fatalf("the stream holds %d messages, want %d", info.State.Msgs, b.N)
			}
		})
	}
}

// cpuTime returns the CPU time (user and system) this process used so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(fmt.Sprintf("getrusage: %v", err))
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
