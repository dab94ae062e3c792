package channel

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/child"
	"github.com/globalreplica/globalreplica/crdt"
)

// OpLog is the region's op log as the shipper sees it. ReadLog returns up
// to n ops from the head, oldest first; TrimLog removes the ops up to a sequence from the head; Lease
// grants (or extends) a named lease to one owner for ttl, so that of several
// children serving a region only one ships at a time. Implemented by
// *child.Engine.
type OpLog interface {
	ReadLog(ctx context.Context, n int64) ([][]byte, error)
	TrimLog(ctx context.Context, upTo uint64) (int64, error)
	Position(ctx context.Context) (child.Position, error)
	Lease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
}

var _ OpLog = (*child.Engine)(nil)

// readiness is an OpLog that knows whether the region's Redis was checked
// against the region's stream (child.Engine.Ready): the shipper waits for
// that check instead of stopping when the Redis is behind the stream.
type readiness interface {
	Ready(ctx context.Context) (bool, error)
}

var _ readiness = (*child.Engine)(nil)

// Defaults of ShipperConfig.
const (
	DefaultShipBatch    = 1024
	DefaultPollInterval = 2 * time.Millisecond
	DefaultLeaseTTL     = 5 * time.Second
)

// ShipperConfig configures a region's shipper.
type ShipperConfig struct {
	Stream       StreamConfig
	Owner        string        // this process's lease owner id (unique per child)
	Batch        int           // ops per publish round, default DefaultShipBatch
	PollInterval time.Duration // how often an idle shipper looks at the op log
	LeaseTTL     time.Duration
}

func (c *ShipperConfig) validate() error {
	if err := c.Stream.validate(); err != nil {
		return err
	}
	if c.Owner == "" {
		return errors.New("channel: shipper needs an owner id")
	}
	if c.Batch == 0 {
		c.Batch = DefaultShipBatch
	}
	if c.PollInterval == 0 {
		c.PollInterval = DefaultPollInterval
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	return nil
}

// Shipper moves a region's op log into the region's stream. See the package
// documentation for the guarantees.
type Shipper struct {
	cfg     ShipperConfig
	js      jetstream.JetStream
	oplog   OpLog
	log     zerolog.Logger
	metrics *Metrics
	wake    chan struct{}
	subject string
	last    uint64 // last sequence the stream holds
	ready   bool
	leaseAt time.Time // when the shipper lease was last renewed
}

// NewShipper returns a shipper. metrics may be nil.
func NewShipper(cfg ShipperConfig, js jetstream.JetStream, oplog OpLog, metrics *Metrics, log zerolog.Logger) (*Shipper, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	return &Shipper{
		cfg: cfg, js: js, oplog: oplog, metrics: metrics,
		log:     log.With().Str("region", cfg.Stream.Region).Str("part", "shipper").Logger(),
		wake:    make(chan struct{}, 1),
		subject: Subject(cfg.Stream.Instance, cfg.Stream.Region),
	}, nil
}

// Notify tells the shipper that the op log grew, so it ships at once
// instead of at its next poll. Safe to call from any goroutine.
func (s *Shipper) Notify() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Run ships until ctx ends. Transient errors (NATS or Redis unreachable) are
// logged and retried with backoff; an op log that disagrees with the stream
// (ErrSequence: the region's Redis lost ops that were already shipped, or an
// OpID would be reused) stops the shipper with the error, loudly.
func (s *Shipper) Run(ctx context.Context) error {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		idle, err := s.round(ctx)
		switch {
		case err == nil:
			backoff = 50 * time.Millisecond
		case errors.Is(err, ErrSequence):
			s.log.Error().Err(err).Msg("shipping stopped")
			return err
		case ctx.Err() != nil:
			return nil //nolint:nilerr // the context ending is a clean stop
		default:
			s.ready = false
			s.metrics.shipError(s.cfg.Stream.Region)
			s.log.Warn().Err(err).Dur("retry_in", backoff).Msg("shipping failed")
			idle = true
			sleep(ctx, backoff)
			backoff = min(2*backoff, 5*time.Second)
		}
		if idle {
			select {
			case <-ctx.Done():
			case <-s.wake:
			case <-time.After(s.cfg.PollInterval):
			}
		}
	}
	return nil
}

// round does one unit of work; idle reports that there was nothing to do.
func (s *Shipper) round(ctx context.Context) (idle bool, err error) {
	// The lease is renewed every third of its TTL, not every round (a
	// round trip to Redis per shipped batch). It only keeps the children
	// of a region from shipping at the same time; what keeps the stream
	// right is the expected last sequence of every publish.
	if !s.ready || time.Since(s.leaseAt) > s.cfg.LeaseTTL/3 {
		lead, err := s.oplog.Lease(ctx, "shipper", s.cfg.Owner, s.cfg.LeaseTTL)
		if err != nil {
			return true, err
		}
		if !lead {
			s.ready = false
			sleep(ctx, s.cfg.LeaseTTL/3)
			return true, nil
		}
		s.leaseAt = time.Now()
	}
	if !s.ready {
		if err := s.prepare(ctx); err != nil {
			return true, err
		}
	}
	ops, err := s.oplog.ReadLog(ctx, int64(s.cfg.Batch))
	if err != nil {
		return true, err
	}
	if s.metrics != nil {
		s.metrics.backlog.WithLabelValues(s.cfg.Stream.Region).Set(float64(len(ops)))
	}
	if len(ops) == 0 {
		return true, nil
	}
	n, err := s.ship(ctx, ops)
	if n > 0 {
		// By sequence, not by count: the log may have been replaced while
		// the ops were in flight (a wipe, a failover).
		upTo, perr := crdt.LastSeq(ops[:n])
		if perr == nil {
			_, perr = s.oplog.TrimLog(ctx, upTo)
		}
		if perr != nil && err == nil {
			err = perr
		}
	}
	return false, err
}

// prepare makes sure the stream exists and learns its last sequence. The
// region's own sequence must not be behind it: that would mean the
// region's Redis lost ops that were already shipped, and the next local op
// would reuse an OpID.
func (s *Shipper) prepare(ctx context.Context) error {
	st, err := EnsureStream(ctx, s.js, s.cfg.Stream)
	if err != nil {
		return err
	}
	info, err := st.Info(ctx)
	if err != nil {
		return err
	}
	pos, err := s.oplog.Position(ctx)
	if err != nil {
		return err
	}
	if pos.Seq < info.State.LastSeq {
		if r, ok := s.oplog.(readiness); ok {
			if ready, err := r.Ready(ctx); err == nil && !ready {
				// A failover or a wipe in progress: the region's guard
				// raises the sequence past the stream before writes
				// (RestoreFromStream); retry after it.
				return fmt.Errorf("channel: this region's Redis is at %d, behind its stream (%d), and not yet checked against it; waiting for the repair", pos.Seq, info.State.LastSeq)
			}
		}
		return fmt.Errorf("%w: the stream holds ops up to %d but this region's Redis is at %d: its Redis lost shipped writes (failover to a lagging replica or restore from an old snapshot?); run the manager's failover repair before writing",
			ErrSequence, info.State.LastSeq, pos.Seq)
	}
	s.last = info.State.LastSeq
	s.ready = true
	s.log.Info().Uint64("stream_last_seq", s.last).Uint64("redis_seq", pos.Seq).Msg("shipper ready")
	return nil
}

// ship publishes ops in order and returns how many from the head are now in
// the stream (and may be trimmed).
func (s *Shipper) ship(ctx context.Context, ops [][]byte) (int, error) {
	type pending struct {
		seq uint64
		f   jetstream.PubAckFuture
	}
	done := 0
	var inflight []pending
	for i, raw := range ops {
		id, err := crdt.PeekID(raw)
		if err != nil {
			return done, fmt.Errorf("%w: op log entry %d: %w", ErrSequence, i, err)
		}
		if id.Region != s.cfg.Stream.Region {
			return done, fmt.Errorf("%w: op log entry %s of another region", ErrSequence, id)
		}
		if id.Seq <= s.last {
			// Published before a crash, not trimmed: only if the stream
			// holds exactly these bytes; anything else is an OpID reuse.
			if len(inflight) > 0 {
				return done, fmt.Errorf("%w: op %s after unshipped ops", ErrSequence, id)
			}
			if err := s.verifyShipped(ctx, id, raw); err != nil {
				return done, err
			}
			done++
			continue
		}
		if id.Seq != s.last+uint64(len(inflight))+1 {
			return done, fmt.Errorf("%w: op log continues with %s but the stream ends at %d", ErrSequence, id, s.last+uint64(len(inflight)))
		}
		msg := &nats.Msg{Subject: s.subject, Data: raw}
		f, err := s.js.PublishMsgAsync(msg, jetstream.WithMsgID(id.String()), jetstream.WithExpectLastSequence(id.Seq-1))
		if err != nil {
			break
		}
		inflight = append(inflight, pending{seq: id.Seq, f: f})
	}
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for _, p := range inflight {
		select {
		case ack := <-p.f.Ok():
			if ack.Sequence != p.seq {
				return done, fmt.Errorf("%w: op %d stored as stream sequence %d", ErrSequence, p.seq, ack.Sequence)
			}
			s.last = p.seq
			done++
			if s.metrics != nil {
				s.metrics.shipped.WithLabelValues(s.cfg.Stream.Region).Inc()
				s.metrics.shippedSeq.WithLabelValues(s.cfg.Stream.Region).Set(float64(p.seq))
			}
		case err := <-p.f.Err():
			s.ready = false // learn the stream's position again
			return done, fmt.Errorf("channel: publishing op %d: %w", p.seq, err)
		case <-timeout.C:
			s.ready = false
			return done, fmt.Errorf("channel: no acknowledgement for op %d", p.seq)
		case <-ctx.Done():
			return done, ctx.Err()
		}
	}
	return done, nil
}

func (s *Shipper) verifyShipped(ctx context.Context, id crdt.OpID, raw []byte) error {
	st, err := s.js.Stream(ctx, StreamName(s.cfg.Stream.Instance, s.cfg.Stream.Region))
	if err != nil {
		return err
	}
	m, err := st.GetMsg(ctx, id.Seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		// aged out: it was shipped long ago
		return nil
	}
	if err != nil {
		return err
	}
	if !bytes.Equal(m.Data, raw) {
		return fmt.Errorf("%w: op %s in the op log differs from the one in the stream: the OpID was issued twice", ErrSequence, id)
	}
	return nil
}

func (m *Metrics) shipError(region string) {
	if m != nil {
		m.shipErrors.WithLabelValues(region).Inc()
	}
}

func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}
