package channel

import (
	"context"
	"fmt"
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
// stream (file storage, an embedded server in this process) the way the
// shipper publishes them (asynchronously, a window of ShipBatch, each with
// its OpID as the message id and the expected last sequence), with no
// Redis and no child. It reports the CPU of this process (client and
// server) per op: the floor under any local write path that ships one
// JetStream message per op on this machine. Sub-benchmarks drop the
// message id and the expected sequence to show what each costs.
func BenchmarkPublishFloor(b *testing.B) {
	for _, bc := range []struct {
		name          string
		msgID, expect bool
	}{
		{"shipper", true, true},
		{"msgid-only", true, false},
		{"plain", false, false},
	} {
		b.Run(bc.name, func(b *testing.B) {
			ns := testnats.Start(b, "floor")
			_, js := ns.Connect()
			ctx := context.Background()
			if _, err := EnsureStream(ctx, js, StreamConfig{Instance: "bench", Region: "sgp"}); err != nil {
				b.Fatal(err)
			}
			subject := Subject("bench", "sgp")
			// About the size of the op of a SET of a 16-byte key to a
			// 3-byte value.
			op := make([]byte, 56)
			const window = 1000
			futures := make([]jetstream.PubAckFuture, 0, window)
			cpu0 := cpuTime()
			b.ResetTimer()
			for seq := 1; seq <= b.N; {
				futures = futures[:0]
				for ; seq <= b.N && len(futures) < window; seq++ {
					var opts []jetstream.PublishOpt
					if bc.msgID {
						opts = append(opts, jetstream.WithMsgID(crdt.OpID{Region: "sgp", Seq: uint64(seq)}.String()))
					}
					if bc.expect {
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
			b.StopTimer()
			b.ReportMetric(float64((cpuTime()-cpu0).Microseconds())/float64(b.N), "cpu-µs/op")
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
