package channel

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
)

// Engine is what a Node needs of the region's engine: the op log for the
// shipper and batch apply for the receivers. Implemented by *child.Engine.
type Engine interface {
	OpLog
	Applier
}

// NodeConfig configures the channels of one region.
type NodeConfig struct {
	Stream StreamConfig // the region's own stream (Instance, Region, limits)
	Owner  string       // lease owner id, unique per child process
	// Receiver defaults for channels added with AddPeer (Batch, FetchWait...).
	Receiver ReceiverConfig
}

// Node runs a region's shipper and one receiver per peer region.
type Node struct {
	cfg     NodeConfig
	engine  Engine
	metrics *Metrics
	log     zerolog.Logger
	shipper *Shipper

	mu      sync.Mutex
	ctx     context.Context // set by Run
	peers   map[string]*peer
	wg      sync.WaitGroup
	running bool
}

type peer struct {
	r      *Receiver
	js     jetstream.JetStream
	cancel context.CancelFunc
	done   chan struct{}
	err    error
}

// NewNode returns the channels of a region: js is the region's own
// JetStream (for its stream). metrics may be nil.
func NewNode(cfg NodeConfig, engine Engine, js jetstream.JetStream, metrics *Metrics, log zerolog.Logger) (*Node, error) {
	sh, err := NewShipper(ShipperConfig{Stream: cfg.Stream, Owner: cfg.Owner}, js, engine, metrics, log)
	if err != nil {
		return nil, err
	}
	return &Node{cfg: cfg, engine: engine, metrics: metrics, log: log, shipper: sh, peers: map[string]*peer{}}, nil
}

// Shipper returns the region's shipper (to Notify it after local writes).
func (n *Node) Shipper() *Shipper { return n.shipper }

// AddPeer adds the channel origin → this region, reading from the origin's
// JetStream js. Before Run it is started by Run; after, at once.
func (n *Node) AddPeer(origin string, js jetstream.JetStream) error {
	rc := n.cfg.Receiver
	rc.Instance, rc.Origin, rc.Dest, rc.Owner = n.cfg.Stream.Instance, origin, n.cfg.Stream.Region, n.cfg.Owner
	r, err := NewReceiver(rc, js, n.engine, n.metrics, n.log)
	if err != nil {
		return err
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.peers[origin]; ok {
		return fmt.Errorf("channel: a channel from %s to %s exists already", origin, n.cfg.Stream.Region)
	}
	p := &peer{r: r, js: js}
	n.peers[origin] = p
	if n.running {
		n.start(p)
	}
	return nil
}

// start runs a peer's receiver; n.mu is held.
func (n *Node) start(p *peer) {
	ctx, cancel := context.WithCancel(n.ctx)
	p.cancel, p.done = cancel, make(chan struct{})
	n.wg.Add(1)
	go func() {
		defer n.wg.Done()
		defer close(p.done)
		p.err = p.r.Run(ctx)
	}()
}

// RemovePeer stops and removes the channel from origin.
func (n *Node) RemovePeer(origin string) {
	n.mu.Lock()
	p := n.peers[origin]
	delete(n.peers, origin)
	n.mu.Unlock()
	if p != nil && p.cancel != nil {
		p.cancel()
		<-p.done
	}
}

// ForgetPeer stops and removes the channel from origin for good: it also
// deletes the channel's durable consumer from the origin's stream, which
// would otherwise stay there (and count against the stream) after the
// channel was deleted. An origin that is gone or unreachable keeps it;
// that is logged, not an error.
func (n *Node) ForgetPeer(ctx context.Context, origin string) {
	n.mu.Lock()
	p := n.peers[origin]
	n.mu.Unlock()
	n.RemovePeer(origin)
	if p == nil {
		return
	}
	dctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	err := p.js.DeleteConsumer(dctx, StreamName(n.cfg.Stream.Instance, origin), durableName(n.cfg.Stream.Region))
	if err != nil && ctx.Err() == nil && !errors.Is(err, jetstream.ErrConsumerNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound) {
		n.log.Warn().Err(err).Str("origin", origin).Msg("could not delete the channel's consumer on the origin's stream")
	}
}

// Receiver returns the receiver of the channel from origin.
func (n *Node) Receiver(origin string) (*Receiver, bool) {
	n.mu.Lock()
	defer n.mu.Unlock()
	p, ok := n.peers[origin]
	if !ok {
		return nil, false
	}
	return p.r, true
}

// Status returns the status of every inbound channel, by origin.
func (n *Node) Status() []Status {
	n.mu.Lock()
	out := make([]Status, 0, len(n.peers))
	for _, p := range n.peers {
		out = append(out, p.r.Status())
	}
	n.mu.Unlock()
	sort.Slice(out, func(i, j int) bool { return out[i].Origin < out[j].Origin })
	return out
}

// Run runs the shipper and the receivers until ctx ends. It returns the
// shipper's error if shipping stopped for good (see Shipper.Run); a channel
// that needs a rebuild stops alone and shows it in its status.
func (n *Node) Run(ctx context.Context) error {
	n.mu.Lock()
	n.ctx, n.running = ctx, true
	for _, p := range n.peers {
		n.start(p)
	}
	n.mu.Unlock()
	err := n.shipper.Run(ctx)
	<-ctx.Done()
	n.wg.Wait()
	return err
}
