package channel

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"golang.org/x/time/rate"

	"github.com/globalreplica/globalreplica/child"
	"github.com/globalreplica/globalreplica/crdt"
	"github.com/globalreplica/globalreplica/resume"
)

// Applier applies batches of encoded ops of one origin atomically together
// with the applied-vector update, skips ops already applied and fails with
// child.ErrGap (changing nothing) for a batch that does not continue the
// applied sequence. Implemented by *child.Engine.
type Applier interface {
	Apply(ctx context.Context, origin string, ops [][]byte) (child.ApplyResult, error)
	NewApplyChain(origin string) child.Chain
	Position(ctx context.Context) (child.Position, error)
	Lease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error)
}

var _ Applier = (*child.Engine)(nil)

// Defaults of ReceiverConfig.
const (
	DefaultRecvBatch = 1000
	DefaultFetchWait = 200 * time.Millisecond
)

// ReceiverConfig configures the receiving end of the channel origin → dest.
type ReceiverConfig struct {
	Instance  string
	Origin    string
	Dest      string
	Owner     string // this process's lease owner id (unique per child)
	Batch     int    // max ops per fetch and apply, default DefaultRecvBatch
	FetchWait time.Duration
	LeaseTTL  time.Duration
	// Throttle: 0 means unlimited. Changeable while running with SetThrottle.
	OpsPerSec   float64
	BytesPerSec float64
	Paused      bool // start paused
}

func (c *ReceiverConfig) validate() error {
	for _, n := range []string{c.Instance, c.Origin, c.Dest} {
		if !crdt.ValidRegion(n) {
			return fmt.Errorf("channel: name %q: %w", n, crdt.ErrBadRegion)
		}
	}
	if c.Origin == c.Dest {
		return fmt.Errorf("channel: a channel from %s to itself", c.Origin)
	}
	if c.Owner == "" {
		return errors.New("channel: receiver needs an owner id")
	}
	if c.Batch == 0 {
		c.Batch = DefaultRecvBatch
	}
	if c.FetchWait == 0 {
		c.FetchWait = DefaultFetchWait
	}
	if c.LeaseTTL == 0 {
		c.LeaseTTL = DefaultLeaseTTL
	}
	if c.OpsPerSec < 0 || c.BytesPerSec < 0 {
		return errors.New("channel: throttle limits must not be negative")
	}
	return nil
}

// durableName is the name of the durable consumer of the channel into dest
// on an origin's stream.
func durableName(dest string) string { return "gr-" + dest }

// errResync makes a session start over from the applied vector.
var errResync = errors.New("channel: resync from the applied vector")

// Status is a channel's state as operators see it.
type Status struct {
	Origin      string         `json:"origin"`
	Dest        string         `json:"dest"`
	State       string         `json:"state"`
	AppliedSeq  uint64         `json:"applied_seq"`
	LastOpID    string         `json:"last_op_id,omitempty"`
	LagOps      uint64         `json:"lag_ops"`
	LagSeconds  float64        `json:"lag_seconds"`
	ApplyRate   float64        `json:"apply_rate"` // ops/s over the last seconds
	OpsPerSec   float64        `json:"throttle_ops_per_sec"`
	BytesPerSec float64        `json:"throttle_bytes_per_sec"`
	LastError   string         `json:"last_error,omitempty"`
	Conflicts   map[string]int `json:"conflicts,omitempty"`
	AppliedOps  uint64         `json:"applied_ops"` // applied by this receiver since it started
	FastOps     uint64         `json:"fast_ops"`    // of those, applied by the engine's fast path (child.ApplyResult.Fast)
}

// Receiver runs the destination end of one channel. Its controls (Pause,
// Resume, SetThrottle) are safe to call from any goroutine while Run runs.
type Receiver struct {
	cfg     ReceiverConfig
	js      jetstream.JetStream // the origin's JetStream
	applier Applier
	log     zerolog.Logger
	metrics *Metrics

	paused atomic.Bool
	wake   chan struct{}

	mu       sync.Mutex
	opsLim   *rate.Limiter
	bytesLim *rate.Limiter
	st       Status
	rateAt   time.Time
	rateOps  uint64
}

// NewReceiver returns the receiver of the channel cfg.Origin → cfg.Dest,
// reading from the origin's JetStream js and applying with applier.
// metrics may be nil.
func NewReceiver(cfg ReceiverConfig, js jetstream.JetStream, applier Applier, metrics *Metrics, log zerolog.Logger) (*Receiver, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	r := &Receiver{
		cfg: cfg, js: js, applier: applier, metrics: metrics,
		log:  log.With().Str("origin", cfg.Origin).Str("dest", cfg.Dest).Str("part", "receiver").Logger(),
		wake: make(chan struct{}, 1),
		st:   Status{Origin: cfg.Origin, Dest: cfg.Dest, State: StateStarting},
	}
	r.paused.Store(cfg.Paused)
	r.SetThrottle(cfg.OpsPerSec, cfg.BytesPerSec)
	return r, nil
}

// Pause stops applying after the batch in progress.
func (r *Receiver) Pause() {
	r.paused.Store(true)
	r.setState(StatePaused, nil)
}

// Resume continues applying from where the channel stopped.
func (r *Receiver) Resume() {
	r.paused.Store(false)
	select {
	case r.wake <- struct{}{}:
	default:
	}
}

// SetThrottle limits the apply rate in ops/s and bytes/s (0: unlimited).
func (r *Receiver) SetThrottle(opsPerSec, bytesPerSec float64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.opsLim, r.bytesLim = nil, nil
	if opsPerSec > 0 {
		// A small bucket (1/20 s of traffic) keeps the rate measured over a
		// few seconds within a few percent of the setting.
		r.opsLim = rate.NewLimiter(rate.Limit(opsPerSec), max(1, int(opsPerSec/20)))
	}
	if bytesPerSec > 0 {
		r.bytesLim = rate.NewLimiter(rate.Limit(bytesPerSec), max(64<<10, int(bytesPerSec/20)))
	}
	r.st.OpsPerSec, r.st.BytesPerSec = opsPerSec, bytesPerSec
	if r.metrics != nil {
		r.metrics.throttleOps.WithLabelValues(r.cfg.Origin, r.cfg.Dest).Set(opsPerSec)
	}
}

// Status returns the channel's current status.
func (r *Receiver) Status() Status {
	r.mu.Lock()
	defer r.mu.Unlock()
	st := r.st
	if st.Conflicts != nil {
		c := make(map[string]int, len(st.Conflicts))
		for k, v := range st.Conflicts {
			c[k] = v
		}
		st.Conflicts = c
	}
	return st
}

func (r *Receiver) setState(state string, err error) {
	r.mu.Lock()
	r.st.State = state
	if err != nil {
		r.st.LastError = err.Error()
	}
	r.mu.Unlock()
	r.metrics.setState(r.cfg.Origin, r.cfg.Dest, state)
}

// Run applies the origin's ops until ctx ends. Transient errors (the
// origin's NATS away, Redis away) are retried with backoff; the channel
// resumes from the destination's applied vector. A gap (ops the destination
// needs have aged out of the origin's stream) stops the channel in state
// needs-rebuild and Run returns an error wrapping ErrNeedsRebuild.
func (r *Receiver) Run(ctx context.Context) error {
	backoff := 100 * time.Millisecond
	for ctx.Err() == nil {
		err := r.session(ctx)
		switch {
		case ctx.Err() != nil:
		case errors.Is(err, child.ErrGap), errors.Is(err, errResync):
			// The destination's applied vector is not where this session
			// thought (its Redis lost state, or another child applied), or
			// the deliveries jumped (an abandoned fetch): start over from
			// the applied vector, which decides.
			r.log.Warn().Err(err).Msg("restarting the channel from the applied vector")
			sleep(ctx, 50*time.Millisecond)
			continue
		case errors.Is(err, resume.ErrGap):
			err = fmt.Errorf("%w: %w", ErrNeedsRebuild, err)
			r.setState(StateNeedsRebuild, err)
			r.log.Error().Err(err).Msg("channel stopped: the origin no longer holds the ops this region needs")
			return err
		case err != nil:
			r.setState(StateError, err)
			if r.metrics != nil {
				r.metrics.recvErrors.WithLabelValues(r.cfg.Origin, r.cfg.Dest).Inc()
			}
			r.log.Warn().Err(err).Dur("retry_in", backoff).Msg("channel interrupted")
			sleep(ctx, backoff)
			backoff = min(2*backoff, 5*time.Second)
			continue
		}
		backoff = 100 * time.Millisecond
	}
	r.setState(StateStopped, nil)
	return nil
}

// session runs the channel from the applied vector until an error.
func (r *Receiver) session(ctx context.Context) error {
	for {
		lead, err := r.applier.Lease(ctx, "recv:"+r.cfg.Origin, r.cfg.Owner, r.cfg.LeaseTTL)
		if err != nil {
			return err
		}
		if lead {
			break
		}
		r.setState(StateStarting, nil)
		sleep(ctx, r.cfg.LeaseTTL/3)
		if ctx.Err() != nil {
			return nil //nolint:nilerr // the context ending is a clean stop
		}
	}
	pos, err := r.applier.Position(ctx)
	if err != nil {
		return err
	}
	applied := pos.Applied[r.cfg.Origin]
	stream, err := r.js.Stream(ctx, StreamName(r.cfg.Instance, r.cfg.Origin))
	if err != nil {
		return fmt.Errorf("channel: origin stream: %w", err)
	}
	info, err := stream.Info(ctx)
	if err != nil {
		return err
	}
	start, err := resume.Plan(r.cfg.Origin, applied, info.State.FirstSeq, info.State.LastSeq)
	if err != nil {
		return err
	}
	// The applied vector, not the consumer, says where to start: replace
	// whatever consumer an earlier run left behind.
	durable := durableName(r.cfg.Dest)
	if err := r.js.DeleteConsumer(ctx, stream.CachedInfo().Config.Name, durable); err != nil && !errors.Is(err, jetstream.ErrConsumerNotFound) {
		return err
	}
	cons, err := stream.CreateOrUpdateConsumer(ctx, jetstream.ConsumerConfig{
		Durable:       durable,
		Description:   "Global Replica channel " + r.cfg.Origin + " -> " + r.cfg.Dest,
		DeliverPolicy: jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:   start,
		AckPolicy:     jetstream.AckAllPolicy,
		AckWait:       30 * time.Second,
		MaxAckPending: -1,
		MaxWaiting:    16,
	})
	if err != nil {
		return fmt.Errorf("channel: consumer: %w", err)
	}
	r.mu.Lock()
	r.st.AppliedSeq, r.st.LastError = applied, ""
	r.mu.Unlock()
	r.log.Info().Uint64("applied", applied).Uint64("stream_first", info.State.FirstSeq).Uint64("stream_last", info.State.LastSeq).Msg("channel started")
	// A fetcher goroutine reads the next batch from JetStream while this
	// one applies the current one. It must be gone before the session
	// returns: a fetch left running would take messages from the consumer
	// that the next session creates under the same name.
	//
	// A second goroutine prepares each fetched batch's apply (decoding, the
	// fast path's read and merges) while this one applies the batch before:
	// with a backlog, fetching, preparing and applying in Redis overlap.
	fctx, cancel := context.WithCancel(ctx)
	fetchedc, batches := make(chan fetched, 1), make(chan fetched, 1)
	var wg sync.WaitGroup
	wg.Add(2)
	go func() {
		defer wg.Done()
		r.fetchLoop(fctx, cons, start, fetchedc)
	}()
	chain := r.applier.NewApplyChain(r.cfg.Origin)
	go func() {
		defer wg.Done()
		r.prepareLoop(fctx, chain, fetchedc, batches)
	}()
	defer func() {
		cancel()
		wg.Wait()
	}()
	expect := start // the next sequence number to apply
	leaseAt := time.Now()
	idle := time.NewTimer(r.cfg.FetchWait)
	defer idle.Stop()
	for {
		if ctx.Err() != nil {
			return nil //nolint:nilerr // the context ending is a clean stop
		}
		if r.paused.Load() {
			r.setState(StatePaused, nil)
			select {
			case <-ctx.Done():
				return nil
			case <-r.wake:
			case <-time.After(r.cfg.FetchWait):
			}
			continue
		}
		if time.Since(leaseAt) > r.cfg.LeaseTTL/3 {
			lead, err := r.applier.Lease(ctx, "recv:"+r.cfg.Origin, r.cfg.Owner, r.cfg.LeaseTTL)
			if err != nil {
				return err
			}
			if !lead {
				return errors.New("channel: lost the receiver lease to another child")
			}
			// A Redis that lost its state (wiped, restarted without
			// persistence, a promoted replica that lagged) has an applied
			// vector behind this session: start over from it even when
			// the origin is quiet and no apply would notice.
			pos, err := r.applier.Position(ctx)
			if err != nil {
				return err
			}
			if applied := pos.Applied[r.cfg.Origin]; applied+1 < expect {
				return fmt.Errorf("%w: the applied vector went back to %d while this session was at %d", errResync, applied, expect-1)
			}
			leaseAt = time.Now()
		}
		r.setState(StateRunning, nil)
		// Wait for the next batch at most FetchWait, so that pause and the
		// lease are looked at while the origin is quiet.
		if !idle.Stop() {
			select {
			case <-idle.C:
			default:
			}
		}
		idle.Reset(r.cfg.FetchWait)
		select {
		case <-ctx.Done():
			return nil
		case <-idle.C:
			continue
		case b := <-batches:
			if err := r.step(ctx, chain, b); err != nil {
				return err
			}
			if b.next > expect {
				expect = b.next
			}
		}
	}
}

// fetched is one batch the fetcher read: the ops to apply in order, the
// call that applies them if the fetcher prepared it, the last message
// (acknowledged with AckAll once the ops are applied) or the error that
// ended the fetcher.
type fetched struct {
	ops  [][]byte
	prep *child.Prepared
	last jetstream.Msg
	md   *jetstream.MsgMetadata
	next uint64 // the sequence number after this batch
	err  error
}

// fetchLoop reads batches from the consumer, checks that they continue the
// sequence from expect, and hands them to the session in order until ctx
// ends or an error, which it hands over as the last batch. It applies what
// has arrived instead of waiting for a full batch: while messages keep
// coming it asks only for those already available (FetchNoWait); when
// none are, it waits up to FetchWait for the next one. Every fetch is read
// to its end, none is abandoned.
func (r *Receiver) fetchLoop(ctx context.Context, cons jetstream.Consumer, expect uint64, out chan<- fetched) {
	send := func(b fetched) bool {
		select {
		case out <- b:
			return true
		case <-ctx.Done():
			return false
		}
	}
	wait := true
	for ctx.Err() == nil {
		if r.paused.Load() {
			// Paused: fetch nothing new; the session holds what it has.
			sleep(ctx, 10*time.Millisecond)
			wait = true
			continue
		}
		r.mu.Lock()
		opsLim := r.opsLim
		r.mu.Unlock()
		n := r.cfg.Batch
		if opsLim != nil {
			n = min(n, opsLim.Burst())
		}
		var (
			batch jetstream.MessageBatch
			err   error
		)
		if wait {
			// Nothing was pending: hand over the first op that arrives.
			batch, err = cons.Fetch(1, jetstream.FetchMaxWait(r.cfg.FetchWait))
		} else {
			batch, err = cons.FetchNoWait(n)
		}
		if err != nil {
			send(fetched{err: err})
			return
		}
		b := fetched{next: expect}
		for msg := range batch.Messages() {
			if b.err != nil {
				continue // read the fetch to its end
			}
			m, err := msg.Metadata()
			if err != nil {
				b.err = err
				continue
			}
			skip, err := resume.CheckNext(r.cfg.Origin, b.next, m.Sequence.Stream)
			if err != nil {
				// A jump in what the consumer delivers is not yet a gap:
				// messages of an abandoned fetch are redelivered only
				// after the ack wait. Start over from the applied vector;
				// the stream's first sequence then tells whether ops
				// really aged out.
				b.err = fmt.Errorf("%w: delivery jumped ahead: %w", errResync, err)
				continue
			}
			b.last, b.md = msg, m
			if skip {
				continue
			}
			b.ops = append(b.ops, msg.Data())
			b.next = m.Sequence.Stream + 1
		}
		if b.err == nil {
			if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) && !errors.Is(err, nats.ErrTimeout) {
				b.err = err
			}
		}
		if b.err != nil {
			send(fetched{err: b.err})
			return
		}
		if b.last == nil {
			wait = true
			continue
		}
		wait = false
		expect = b.next
		if !send(b) {
			return
		}
	}
}

// prepareLoop hands the fetched batches on in order, each with its apply
// prepared by chain unless the channel is throttled (a throttled batch is
// applied in chunks, see step). It ends at an error, which it hands on.
func (r *Receiver) prepareLoop(ctx context.Context, chain child.Chain, in <-chan fetched, out chan<- fetched) {
	for {
		var b fetched
		select {
		case b = <-in:
		case <-ctx.Done():
			return
		}
		if b.err == nil && len(b.ops) > 0 && !r.throttled() {
			var err error
			if b.prep, err = chain.Prepare(ctx, b.ops); err != nil {
				b = fetched{err: err}
			}
		}
		select {
		case out <- b:
		case <-ctx.Done():
			return
		}
		if b.err != nil {
			return
		}
	}
}

// throttled tells whether the channel has an ops or bytes limit.
func (r *Receiver) throttled() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.opsLim != nil || r.bytesLim != nil
}

// step throttles, applies and acknowledges one fetched batch.
func (r *Receiver) step(ctx context.Context, chain child.Chain, b fetched) error {
	if b.err != nil {
		return b.err
	}
	if b.prep != nil {
		if err := r.holdWhilePaused(ctx); err != nil {
			return err
		}
		if !r.throttled() {
			res, err := chain.Commit(ctx, b.prep)
			if err != nil {
				return err
			}
			r.record(res, b.md)
			return b.last.Ack()
		}
		// Throttled since the batch was prepared: apply it in throttled
		// chunks below.
		chain.Drop(b.prep)
	}
	for ops := b.ops; len(ops) > 0; {
		// Paused while the batch was fetched: hold it, apply nothing.
		if err := r.holdWhilePaused(ctx); err != nil {
			return err
		}
		// A throttled channel applies at most a bucket of ops at a time,
		// so that the ops applied follow the limit closely also when the
		// batch was fetched before the throttle was set.
		r.mu.Lock()
		opsLim, bytesLim := r.opsLim, r.bytesLim
		r.mu.Unlock()
		chunk := ops
		if opsLim != nil && len(chunk) > opsLim.Burst() {
			chunk = chunk[:opsLim.Burst()]
		}
		if opsLim != nil {
			if err := opsLim.WaitN(ctx, len(chunk)); err != nil {
				return err
			}
		}
		if bytesLim != nil {
			bytes := 0
			for _, op := range chunk {
				bytes += len(op)
			}
			for rest := bytes; rest > 0; {
				n := min(rest, bytesLim.Burst())
				if err := bytesLim.WaitN(ctx, n); err != nil {
					return err
				}
				rest -= n
			}
		}
		res, err := r.applier.Apply(ctx, r.cfg.Origin, chunk)
		if err != nil {
			return err
		}
		r.record(res, b.md)
		ops = ops[len(chunk):]
	}
	// AckAll: acknowledges every message up to this one, after the apply
	// and the applied-vector update are durable in Redis. The ack is a
	// publish: it does not wait for the server.
	return b.last.Ack()
}

// holdWhilePaused waits while the channel is paused, keeping its lease.
func (r *Receiver) holdWhilePaused(ctx context.Context) error {
	for r.paused.Load() {
		r.setState(StatePaused, nil)
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-r.wake:
		case <-time.After(r.cfg.LeaseTTL / 3):
			lead, err := r.applier.Lease(ctx, "recv:"+r.cfg.Origin, r.cfg.Owner, r.cfg.LeaseTTL)
			if err != nil {
				return err
			}
			if !lead {
				return errors.New("channel: lost the receiver lease to another child")
			}
		}
	}
	r.setState(StateRunning, nil)
	return nil
}

func (r *Receiver) record(res child.ApplyResult, md *jetstream.MsgMetadata) {
	now := time.Now()
	r.mu.Lock()
	r.st.AppliedSeq = res.LastSeq
	r.st.LastOpID = crdt.OpID{Region: r.cfg.Origin, Seq: res.LastSeq}.String()
	r.st.LagOps = md.NumPending
	r.st.LagSeconds = 0
	if md.NumPending > 0 {
		r.st.LagSeconds = now.Sub(md.Timestamp).Seconds()
	}
	r.st.AppliedOps += uint64(res.Applied)
	r.st.FastOps += uint64(res.Fast)
	for k, v := range res.Conflicts {
		if r.st.Conflicts == nil {
			r.st.Conflicts = map[string]int{}
		}
		r.st.Conflicts[k] += v
	}
	if r.rateAt.IsZero() {
		r.rateAt, r.rateOps = now, r.st.AppliedOps
	} else if dt := now.Sub(r.rateAt); dt >= time.Second {
		r.st.ApplyRate = float64(r.st.AppliedOps-r.rateOps) / dt.Seconds()
		r.rateAt, r.rateOps = now, r.st.AppliedOps
	}
	st := r.st
	r.mu.Unlock()
	if m := r.metrics; m != nil {
		o, d := r.cfg.Origin, r.cfg.Dest
		m.applied.WithLabelValues(o, d).Add(float64(res.Applied))
		m.appliedSeq.WithLabelValues(o, d).Set(float64(st.AppliedSeq))
		m.lagOps.WithLabelValues(o, d).Set(float64(st.LagOps))
		m.lagSeconds.WithLabelValues(o, d).Set(st.LagSeconds)
		for k, v := range res.Conflicts {
			m.conflicts.WithLabelValues(d, k).Add(float64(v))
		}
	}
}
