package daemon

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

	"github.com/globalreplica/globalreplica/child"
	"github.com/globalreplica/globalreplica/crdt"
	"github.com/globalreplica/globalreplica/manager"
)

// Defaults of ManagerConfig.
const (
	DefaultManagerRetry = time.Second
	// managerResync is how often the child re-applies the last desired
	// state, to retry a channel that could not be started.
	managerResync = 5 * time.Second
)

// ManagerConfig connects a child to the channel manager's config store
// (package manager). With it, the child's inbound channels come from the
// desired state instead of Config.Peers (the two exclude each other): the
// child watches the config bucket and, for every region R that is not
// evicted and has a channel R → this region, connects to R's NATS (the URL
// of R's entry, with this child's NATS credentials) and runs the channel;
// it stops channels that were deleted or whose origin was removed or
// evicted, and applies pause and throttle to running channels live. It
// publishes a heartbeat (position, op-log backlog, channel statuses) every
// Heartbeat.
//
// The manager is not on the data path: while its NATS is unreachable the
// child keeps its channels as they are and catches up with the desired
// state when it comes back. Only a deleted instance (its buckets gone), a
// removed or an evicted region stop them.
type ManagerConfig struct {
	// NATS is where the config store lives; an empty URL means no manager.
	NATS NATS
	// Heartbeat is the heartbeat interval, default manager.HeartbeatInterval.
	Heartbeat time.Duration
	// Retry is the wait between attempts to reach the config store while
	// the instance does not exist yet, default DefaultManagerRetry.
	Retry time.Duration
	// GCEvery is the least time between two tombstone collections, default
	// DefaultGCEvery.
	GCEvery time.Duration
}

// DefaultGCEvery spaces tombstone collections. A collection scans the
// region's whole keyspace (a page of child.GCBatch keys per call) and the
// floor moves every few seconds, so collecting at every new floor would
// keep Redis scanning all the time; tombstones are only storage, and a
// minute more of them costs little.
const DefaultGCEvery = time.Minute

func (m *ManagerConfig) validate(c *Config) error {
	if m.NATS.URL == "" {
		return nil
	}
	if len(c.Peers) > 0 {
		return errors.New("daemon: static peers and a channel manager exclude each other: with a manager, the channels come from its desired state (drop the peers, or the manager)")
	}
	if c.NATS.URL == "" {
		return errors.New("daemon: a channel manager needs the region's own NATS URL (its stream lives there)")
	}
	if m.Heartbeat <= 0 {
		m.Heartbeat = manager.HeartbeatInterval
	}
	if m.Retry <= 0 {
		m.Retry = DefaultManagerRetry
	}
	if m.GCEvery <= 0 {
		m.GCEvery = DefaultGCEvery
	}
	return nil
}

// managed runs a child's link to the channel manager.
type managed struct {
	d   *Daemon
	cfg ManagerConfig
	log zerolog.Logger
	js  jetstream.JetStream // the manager's NATS

	mu    sync.Mutex
	peers map[string]*managedPeer // by origin
	last  *manager.State          // last desired state applied
	retry bool                    // the last apply left something to retry

	gcAt   time.Time   // the floor last collected
	gcRan  time.Time   // when the last collection started
	gcBusy atomic.Bool // a collection runs

	fo *follower // follows the region's Redis entry (failover.go)

	rb rebuildState // the region's rebuilds (rebuild.go)
}

type managedPeer struct {
	spec manager.Inbound
	nc   *nats.Conn
}

// startManager connects to the manager's NATS; Start calls it when a
// manager is configured.
func (d *Daemon) startManager(cfg Config, log zerolog.Logger) error {
	if d.Node == nil {
		return errors.New("daemon: a channel manager needs the region's channels (its own NATS)")
	}
	log = log.With().Str("part", "manager-link").Logger()
	nc, err := cfg.Manager.NATS.connect("gr-"+cfg.Instance+"-"+cfg.Region+"-manager", log)
	if err != nil {
		return fmt.Errorf("daemon: NATS of the channel manager: %w", err)
	}
	d.conns = append(d.conns, nc)
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	d.mgr = &managed{d: d, cfg: cfg.Manager, log: log, js: js, peers: map[string]*managedPeer{}}
	d.mgr.fo = newFollower(d, cfg.Manager.Heartbeat, log)
	return nil
}

// run follows the desired state and publishes heartbeats until ctx ends.
func (m *managed) run(ctx context.Context) error {
	defer m.stopAll()
	foDone := make(chan struct{})
	go func() { defer close(foDone); m.fo.run(ctx) }()
	defer func() { <-foDone }()
	waiting := false
	for ctx.Err() == nil {
		store, err := manager.Bind(ctx, m.js, m.d.cfg.Instance, manager.WithLogger(m.log))
		if err != nil {
			if errors.Is(err, manager.ErrNoInstance) {
				m.apply(ctx, manager.NewState()) // deleted, or not created yet: no channels
			}
			if !waiting {
				m.log.Warn().Err(err).Msg("waiting for the channel manager's config store")
				waiting = true
			}
			sleep(ctx, m.cfg.Retry)
			continue
		}
		if waiting {
			m.log.Info().Msg("connected to the channel manager's config store")
			waiting = false
		}
		if err := m.session(ctx, store); err != nil && ctx.Err() == nil {
			m.log.Warn().Err(err).Msg("lost the channel manager's config store; retrying")
			sleep(ctx, m.cfg.Retry)
		}
	}
	return nil
}

// session watches the desired state of a bound store and publishes
// heartbeats, until ctx ends or the store is gone.
func (m *managed) session(ctx context.Context, store *manager.Store) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	states, err := store.Watch(ctx)
	if err != nil {
		return err
	}
	gone := make(chan error, 1)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		if err := m.heartbeats(ctx, store); err != nil {
			gone <- err
			cancel()
		}
	}()
	defer wg.Wait()
	resync := time.NewTicker(managerResync)
	defer resync.Stop()
	// A floor that came while collections were spaced out (GCEvery) is
	// collected at the next tick, even if no newer one comes.
	gcTick := time.NewTicker(m.cfg.GCEvery)
	defer gcTick.Stop()
	for {
		select {
		case <-ctx.Done():
			select {
			case err := <-gone:
				return err
			default:
				return nil
			}
		case st, ok := <-states:
			if !ok {
				if ctx.Err() != nil {
					continue
				}
				return errors.New("daemon: the watch of the desired state stopped")
			}
			m.apply(ctx, st)
			m.collect(ctx, st.Floor)
			m.rebuildCheck(ctx, store, st)
		case <-gcTick.C:
			m.mu.Lock()
			last := m.last
			m.mu.Unlock()
			if last != nil {
				m.collect(ctx, last.Floor)
			}
		case <-resync.C:
			m.mu.Lock()
			last, again := m.last, m.retry
			m.mu.Unlock()
			if again && last != nil {
				m.apply(ctx, *last)
			}
			if last != nil {
				m.rebuildCheck(ctx, store, *last)
			}
		}
	}
}

// heartbeats publishes this child's heartbeat every interval. It returns
// an error wrapping manager.ErrNoInstance when the instance was deleted;
// other failures (the manager's NATS away) are logged and retried.
func (m *managed) heartbeats(ctx context.Context, store *manager.Store) error {
	t := time.NewTicker(m.cfg.Heartbeat)
	defer t.Stop()
	failing := false
	for {
		err := store.PutHeartbeat(ctx, m.heartbeat(ctx))
		switch {
		case ctx.Err() != nil:
			return nil
		case err != nil:
			// The buckets may be gone with the instance: check.
			if _, berr := manager.Bind(ctx, m.js, m.d.cfg.Instance); errors.Is(berr, manager.ErrNoInstance) {
				m.log.Warn().Err(berr).Msg("the instance was deleted; stopping its channels")
				m.apply(ctx, manager.NewState())
				return berr
			}
			if !failing {
				m.log.Warn().Err(err).Msg("heartbeat failed; retrying")
				failing = true
			}
		case failing:
			m.log.Info().Msg("heartbeats published again")
			failing = false
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-m.fo.changed: // the Redis health changed: report it at once
		}
	}
}

// heartbeat builds this child's heartbeat.
func (m *managed) heartbeat(ctx context.Context) manager.Heartbeat {
	h := manager.Heartbeat{
		Region: m.d.cfg.Region, Owner: m.d.cfg.Owner, Time: time.Now().UTC(),
		Channels: m.d.Statuses(), Version: child.Version, Redis: m.fo.snapshot(),
	}
	rctx, cancel := context.WithTimeout(ctx, m.cfg.Heartbeat)
	defer cancel()
	pos, err := m.d.Engine.Position(rctx)
	if err == nil {
		h.Seq, h.Applied = pos.Seq, pos.Applied
		h.Backlog, err = m.d.Engine.LogLen(rctx)
	}
	if err != nil {
		h.Error = "reading the position from Redis: " + err.Error()
	}
	h.Rebuild = m.rb.progress.Load()
	return h
}

// apply reconciles the running channels with the desired state st.
func (m *managed) apply(ctx context.Context, st manager.State) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.last, m.retry = &st, false
	if r, ok := st.Regions[m.d.cfg.Region]; ok {
		m.fo.update(r) // follow a failover (failover.go)
	}
	running := make(map[string]manager.Inbound, len(m.peers))
	for origin, p := range m.peers {
		running[origin] = p.spec
	}
	desired := manager.DesiredInbound(st, m.d.cfg.Region)
	if m.holdsChannels(st) { // a rebuild copies into this region
		desired = map[string]manager.Inbound{}
	}
	plan := manager.PlanInbound(desired, running)
	if plan.Empty() {
		return
	}
	for _, origin := range plan.Remove {
		p := m.peers[origin]
		m.d.Node.ForgetPeer(ctx, origin)
		p.nc.Close()
		delete(m.peers, origin)
		m.log.Info().Str("origin", origin).Msg("channel stopped by the desired state")
	}
	for _, spec := range plan.Add {
		if ctx.Err() != nil {
			return
		}
		if err := m.add(spec); err != nil {
			m.retry = true
			m.log.Error().Err(err).Str("origin", spec.Origin).Msg("cannot start the channel; retrying")
			continue
		}
		m.log.Info().Str("origin", spec.Origin).Str("nats", spec.NATS).Bool("paused", spec.Paused).
			Float64("ops_per_sec", spec.OpsPerSec).Float64("bytes_per_sec", spec.BytesPerSec).Msg("channel started by the desired state")
	}
	for _, spec := range plan.Control {
		recv, ok := m.d.Node.Receiver(spec.Origin)
		if !ok {
			continue
		}
		control(recv, m.peers[spec.Origin].spec, spec)
		m.peers[spec.Origin].spec = spec
		m.log.Info().Str("origin", spec.Origin).Bool("paused", spec.Paused).
			Float64("ops_per_sec", spec.OpsPerSec).Float64("bytes_per_sec", spec.BytesPerSec).Msg("channel controls changed")
	}
}

// add connects to the origin's NATS and starts its channel with its
// controls; m.mu is held.
func (m *managed) add(spec manager.Inbound) error {
	creds := m.d.cfg.NATS // this child's credentials, the origin's URL
	creds.URL = spec.NATS
	nc, err := creds.connect("gr-"+m.d.cfg.Instance+"-"+m.d.cfg.Region+"-from-"+spec.Origin, m.log)
	if err != nil {
		return fmt.Errorf("daemon: NATS of %s: %w", spec.Origin, err)
	}
	js, err := jetstream.New(nc)
	if err == nil {
		err = m.d.Node.AddPeer(spec.Origin, js)
	}
	if err != nil {
		nc.Close()
		return err
	}
	// The receiver needs several round trips (lease, position, consumer,
	// fetch) before its first apply and checks the pause right before it,
	// so a channel created paused applies nothing.
	if recv, ok := m.d.Node.Receiver(spec.Origin); ok {
		control(recv, manager.Inbound{}, spec)
	}
	m.peers[spec.Origin] = &managedPeer{spec: spec, nc: nc}
	return nil
}

// receiverControls is what control needs of a channel.Receiver.
type receiverControls interface {
	Pause()
	Resume()
	SetThrottle(opsPerSec, bytesPerSec float64)
}

// control moves a receiver's controls from was to want.
func control(r receiverControls, was, want manager.Inbound) {
	if want.OpsPerSec != was.OpsPerSec || want.BytesPerSec != was.BytesPerSec {
		r.SetThrottle(want.OpsPerSec, want.BytesPerSec)
	}
	switch {
	case want.Paused && !was.Paused:
		r.Pause()
	case !want.Paused && was.Paused:
		r.Resume()
	}
}

// stopAll stops every managed channel and closes their connections.
func (m *managed) stopAll() {
	m.mu.Lock()
	defer m.mu.Unlock()
	for origin, p := range m.peers {
		m.d.Node.RemovePeer(origin)
		p.nc.Close()
		delete(m.peers, origin)
	}
}

// sleep waits d or until ctx ends.
func sleep(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

// gcDue reports whether floor f is worth a collection at now: it is newer
// than the floor last collected and the last collection started GCEvery
// ago or more.
func (m *managed) gcDue(f *manager.Floor, now time.Time) bool {
	return f != nil && f.At.After(m.gcAt) && now.Sub(m.gcRan) >= m.cfg.GCEvery
}

// collect collects the region's tombstones below a new floor, in the
// background, one collection at a time and at most one per GCEvery, by the
// child holding the region's "gc" lease.
func (m *managed) collect(ctx context.Context, f *manager.Floor) {
	now := time.Now()
	if !m.gcDue(f, now) || !m.gcBusy.CompareAndSwap(false, true) {
		return
	}
	m.gcAt, m.gcRan = f.At, now
	floor := crdt.Vector(f.Applied)
	go func() {
		defer m.gcBusy.Store(false)
		lead, err := m.d.Engine.Lease(ctx, "gc", m.d.cfg.Owner, time.Minute)
		if err != nil || !lead {
			return
		}
		n, err := m.d.Engine.CollectTombstones(ctx, floor)
		if err != nil {
			if ctx.Err() == nil { // not the child stopping
				m.log.Warn().Err(err).Msg("tombstone collection failed")
			}
			return
		}
		m.log.Info().Int("collected", n).Str("floor", floor.String()).Msg("tombstones collected")
	}()
}
