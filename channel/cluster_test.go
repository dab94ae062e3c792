package channel

import (
	"context"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/child"
	"github.com/globalreplica/globalreplica/crdt"
	"github.com/globalreplica/globalreplica/internal/testnats"
	"github.com/globalreplica/globalreplica/internal/testredis"
)

const instance = "test"

// region is one region of a test cluster: a real redis-server, a real NATS
// server with JetStream, the engine and the channels.
type region struct {
	name    string
	engine  *child.Engine
	nats    *testnats.Server
	js      jetstream.JetStream
	metrics *Metrics
	node    *Node
	cancel  context.CancelFunc
	done    chan error
	stream  StreamConfig
	recv    ReceiverConfig
	wrap    func(Engine) Engine // fault injection around the engine
}

type cluster struct {
	t       *testing.T
	regions []*region
}

func testLogger(t *testing.T) zerolog.Logger {
	return zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)
}

// newCluster starts regions; their channels are not running until start.
func newCluster(t *testing.T, names ...string) *cluster {
	t.Helper()
	c := &cluster{t: t}
	for _, n := range names {
		rdb := testredis.Start(t).Client()
		e, err := child.NewEngine(context.Background(), child.EngineConfig{Instance: instance, Region: n}, rdb, testLogger(t))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = e.Close() })
		if err := e.MarkReady(context.Background()); err != nil {
			t.Fatal(err)
		}
		ns := testnats.Start(t, n)
		_, js := ns.Connect()
		c.regions = append(c.regions, &region{
			name: n, engine: e, nats: ns, js: js, metrics: NewMetrics(prometheus.NewRegistry()),
			stream: StreamConfig{Instance: instance, Region: n},
			recv:   ReceiverConfig{FetchWait: 50 * time.Millisecond},
		})
	}
	return c
}

func (c *cluster) region(name string) *region {
	for _, r := range c.regions {
		if r.name == name {
			return r
		}
	}
	c.t.Fatalf("no region %s", name)
	return nil
}

// start runs a region's shipper and its channels from every other region.
func (c *cluster) start(r *region) {
	c.t.Helper()
	var eng Engine = r.engine
	if r.wrap != nil {
		eng = r.wrap(eng)
	}
	node, err := NewNode(NodeConfig{Stream: r.stream, Owner: r.name + "-child", Receiver: r.recv}, eng, r.js, r.metrics, testLogger(c.t))
	if err != nil {
		c.t.Fatal(err)
	}
	for _, o := range c.regions {
		if o != r {
			// the receiver reads from the origin's own NATS server
			_, ojs := o.nats.Connect()
			if err := node.AddPeer(o.name, ojs); err != nil {
				c.t.Fatal(err)
			}
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.node, r.cancel, r.done = node, cancel, make(chan error, 1)
	go func() { r.done <- node.Run(ctx) }()
	c.t.Cleanup(func() { c.stop(r) })
}

func (c *cluster) stop(r *region) {
	if r.cancel == nil {
		return
	}
	r.cancel()
	if err := <-r.done; err != nil {
		c.t.Errorf("%s: channels stopped with %v", r.name, err)
	}
	r.cancel = nil
}

func (c *cluster) startAll() {
	for _, r := range c.regions {
		c.start(r)
	}
}

// write runs one engine write in a region and wakes its shipper.
func (c *cluster) write(r *region, args ...string) any {
	c.t.Helper()
	v, err := r.engine.Write(context.Background(), args[0], args[1:]...)
	if err != nil && !isUserError(err) {
		c.t.Fatalf("%s %v: %v", r.name, args, err)
	}
	if r.node != nil {
		r.node.Shipper().Notify()
	}
	return v
}

// isUserError reports errors a command may legitimately get (WRONGTYPE...).
func isUserError(err error) bool {
	s := err.Error()
	return len(s) > 4 && (s[:4] == "ERR " || s[:9] == "WRONGTYPE")
}

// positions returns every region's own sequence number.
func (c *cluster) seqs() map[string]uint64 {
	out := map[string]uint64{}
	for _, r := range c.regions {
		p, err := r.engine.Position(context.Background())
		if err != nil {
			c.t.Fatal(err)
		}
		out[r.name] = p.Seq
	}
	return out
}

// waitConverged waits until every region applied every other region's ops,
// then checks that all show the same state, and returns it.
func (c *cluster) waitConverged(timeout time.Duration) map[string]crdt.Visible {
	c.t.Helper()
	ctx := context.Background()
	deadline := time.Now().Add(timeout)
	for {
		want := c.seqs()
		caught := true
		for _, r := range c.regions {
			p, err := r.engine.Position(ctx)
			if err != nil {
				c.t.Fatal(err)
			}
			for o, s := range want {
				if p.Applied[o] < s {
					caught = false
				}
			}
		}
		if caught {
			break
		}
		if time.Now().After(deadline) {
			for _, r := range c.regions {
				p, _ := r.engine.Position(ctx)
				c.t.Logf("%s: seq %d applied %v status %+v", r.name, p.Seq, p.Applied, statusOf(r))
			}
			c.t.Fatalf("regions did not catch up within %v (want %v)", timeout, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var first map[string]crdt.Visible
	for i, r := range c.regions {
		d, err := r.engine.Dump(ctx)
		if err != nil {
			c.t.Fatal(err)
		}
		if i == 0 {
			first = d
			continue
		}
		if !reflect.DeepEqual(d, first) {
			c.t.Fatalf("regions %s and %s differ:\n%s: %v\n%s: %v", c.regions[0].name, r.name, c.regions[0].name, first, r.name, d)
		}
	}
	return first
}

func statusOf(r *region) []Status {
	if r.node == nil {
		return nil
	}
	return r.node.Status()
}

// streamOps reads every op of a region's stream.
func (c *cluster) streamOps(r *region) []*crdt.Op {
	c.t.Helper()
	ctx := context.Background()
	st, err := r.js.Stream(ctx, StreamName(instance, r.name))
	if err != nil {
		c.t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	var ops []*crdt.Op
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m, err := st.GetMsg(ctx, seq)
		if err != nil {
			c.t.Fatalf("stream %s seq %d: %v", r.name, seq, err)
		}
		op, err := crdt.UnmarshalOp(m.Data)
		if err != nil {
			c.t.Fatal(err)
		}
		if op.ID.Seq != seq || op.ID.Region != r.name || m.Header.Get("Nats-Msg-Id") != op.ID.String() {
			c.t.Fatalf("stream %s seq %d holds op %s (msg id %q)", r.name, seq, op.ID, m.Header.Get("Nats-Msg-Id"))
		}
		ops = append(ops, op)
	}
	return ops
}

// modelOf merges every op of every stream with the crdt model.
func (c *cluster) modelOf() map[string]crdt.Visible {
	c.t.Helper()
	s := crdt.NewStore("model")
	for _, r := range c.regions {
		for _, op := range c.streamOps(r) {
			s.Apply(op)
		}
	}
	return s.Snapshot(time.Now().UnixMilli())
}

// TestConcurrentWritesConverge: concurrent conflicting writes of every type
// from three regions on a small hot keyspace converge to identical state,
// equal to the crdt model's merge of all ops in the streams.
func TestConcurrentWritesConverge(t *testing.T) {
	c := newCluster(t, "sgp", "fra", "iad")
	c.startAll()
	var wg sync.WaitGroup
	for i, r := range c.regions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rnd := newRand(uint64(i))
			for n := 0; n < 1500; n++ {
				c.write(r, mix.Next(rnd)...)
			}
		}()
	}
	wg.Wait()
	got := c.waitConverged(60 * time.Second)
	if len(got) < 10 {
		t.Fatalf("only %d keys at the end: the workload is too weak", len(got))
	}
	if model := c.modelOf(); !reflect.DeepEqual(got, model) {
		t.Fatalf("regions differ from the model's merge:\nregions: %v\nmodel:   %v", got, model)
	}
	conflicts := 0
	for _, r := range c.regions {
		for _, st := range r.node.Status() {
			for _, n := range st.Conflicts {
				conflicts += n
			}
		}
	}
	if conflicts == 0 {
		t.Fatal("no conflicts were resolved: the writes did not overlap")
	}
	t.Logf("%d keys converged, %d conflicts resolved", len(got), conflicts)
}

// counterTotal sums increments written, per key.
type counterTotal struct {
	mu sync.Mutex
	m  map[string]int64
}

func (ct *counterTotal) add(k string, d int64) {
	ct.mu.Lock()
	ct.m[k] += d
	ct.mu.Unlock()
}

func checkCounters(t *testing.T, c *cluster, ct *counterTotal) {
	t.Helper()
	for _, r := range c.regions {
		for k, want := range ct.m {
			v, ok, err := r.engine.Get(context.Background(), k)
			if err != nil || !ok {
				t.Fatalf("%s: counter %s: %v %v", r.name, k, ok, err)
			}
			if v != strconv.FormatInt(want, 10) {
				t.Fatalf("%s: counter %s = %s, want %d (every increment exactly once)", r.name, k, v, want)
			}
		}
	}
}

// gaugeValue reads one series of the channel state gauge.
func gaugeValue(t *testing.T, m *Metrics, labels map[string]string) float64 {
	t.Helper()
	g, err := m.state.GetMetricWith(labels)
	if err != nil {
		t.Fatal(err)
	}
	return testutil.ToFloat64(g)
}
