package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/manager"
)

// Failover on the child's side (manager/failover.go has the whole
// picture). With a channel manager, each child follows its region's entry
// of the desired state: when Region.Redis names another Redis than the one
// its engine uses, it promotes it, demotes the old master when that one
// answers, repoints the engine and makes the new master writable through
// the region's guard (ensureReady). One child of the region (lease
// "replica") keeps Region.Replica a replica of Region.Redis. Every probe
// interval the child probes both and reports them in its heartbeat.

// Failover timing.
const (
	// adminTimeout bounds each command of the follower to a Redis that
	// may be dead.
	adminTimeout = time.Second
	// fenceWrites is how long a planned failover (the old master answers)
	// pauses the old master's writes while the replica catches up.
	fenceWrites = 10 * time.Second
	// catchUpWait bounds the wait for the replica to catch up.
	catchUpWait = 5 * time.Second
)

// follower follows the region's Redis entry for a managed child.
type follower struct {
	d        *Daemon
	log      zerolog.Logger
	interval time.Duration
	want     chan manager.Region // the latest entry of the region (holds one)
	changed  chan struct{}       // the health changed: publish a heartbeat now

	mu      sync.Mutex
	region  *manager.Region // the last entry seen
	health  manager.RedisHealth
	lastErr string                   // the last switch error logged
	admin   map[string]*redis.Client // admin clients by address
}

func newFollower(d *Daemon, interval time.Duration, log zerolog.Logger) *follower {
	return &follower{
		d: d, log: log.With().Str("part", "failover").Logger(), interval: interval,
		want: make(chan manager.Region, 1), changed: make(chan struct{}, 1),
		health: manager.RedisHealth{Master: d.Engine.Addr()},
		admin:  map[string]*redis.Client{},
	}
}

// update hands the follower the region's entry of a new desired state; it
// never blocks.
func (f *follower) update(r manager.Region) {
	select {
	case <-f.want:
	default:
	}
	f.want <- r
}

// mayServe refuses to make the Redis at addr writable when the region's
// entry names it the replica of another master: the child still uses a
// master the region was failed away from, and follows the entry within a
// probe interval.
func (f *follower) mayServe(addr string) error {
	f.mu.Lock()
	r := f.region
	f.mu.Unlock()
	if r != nil && addr == r.Replica && addr != r.Redis {
		return fmt.Errorf("daemon: this child's Redis %s is the region's replica since a failover (its master is %s): not serving writes on it", addr, r.Redis)
	}
	return nil
}

// snapshot returns the health for the heartbeat.
func (f *follower) snapshot() *manager.RedisHealth {
	f.mu.Lock()
	defer f.mu.Unlock()
	h := f.health
	return &h
}

// run follows the region's entry and probes its Redis until ctx ends.
func (f *follower) run(ctx context.Context) {
	defer f.closeAdmin()
	t := time.NewTicker(f.interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case r := <-f.want:
			f.mu.Lock()
			f.region = &r
			f.mu.Unlock()
		case <-t.C:
		}
		f.round(ctx)
	}
}

// round does one step: follow the entry, probe, keep the replica.
func (f *follower) round(ctx context.Context) {
	f.mu.Lock()
	r := f.region
	f.mu.Unlock()
	if r != nil && r.Redis != "" && r.Redis != f.d.Engine.Addr() {
		err := f.switchTo(ctx, *r)
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		if err != nil && msg != f.lastErr && ctx.Err() == nil {
			f.log.Error().Err(err).Str("master", r.Redis).Msg("cannot follow the region's failover; retrying")
		}
		f.lastErr = msg
	}
	f.probe(ctx, r)
	if r != nil {
		f.keepReplica(ctx, *r)
	}
}

// switchTo moves the child to the master r.Redis: promote it (unless it
// is a master already), demote the old master if it answers, repoint the
// engine, then check the new master against the region's stream before
// writes are served on it.
func (f *follower) switchTo(ctx context.Context, r manager.Region) error {
	old := f.d.Engine.Addr()
	host, port, err := net.SplitHostPort(r.Redis)
	if err != nil {
		return fmt.Errorf("daemon: the region's Redis %q is not host:port: %w", r.Redis, err)
	}
	next := f.client(r.Redis)
	role, _, err := replication(ctx, next)
	if err != nil {
		return fmt.Errorf("daemon: the region's new master %s: %w", r.Redis, err)
	}
	ours := old == r.Replica // the swap moved the master away from ours
	oldc := f.client(old)
	oldRole, _, oldErr := replication(ctx, oldc)
	if role != "master" {
		if !ours {
			return fmt.Errorf("daemon: the region's Redis %s is a replica, and this child's Redis %s is not the region's replica (%s): not promoting it; check the region's addresses", r.Redis, old, r.Replica)
		}
		if oldErr == nil && oldRole == "master" {
			// A planned failover: the old master answers. Fence its writes
			// and let the replica catch up, so the new master holds every
			// op the old one acknowledged.
			if err := oldc.Do(ctx, "CLIENT", "PAUSE", fenceWrites.Milliseconds(), "WRITE").Err(); err != nil {
				f.log.Warn().Err(err).Str("redis", old).Msg("cannot pause the old master's writes")
			} else {
				defer func() { _ = oldc.Do(context.WithoutCancel(ctx), "CLIENT", "UNPAUSE").Err() }()
				if err := catchUp(ctx, oldc, next); err != nil {
					f.log.Warn().Err(err).Str("redis", r.Redis).Msg("the replica did not catch up with the old master; ops it missed that were shipped come back from the stream")
				}
			}
		}
		if err := next.Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
			return fmt.Errorf("daemon: promoting %s: %w", r.Redis, err)
		}
		f.log.Warn().Str("redis", r.Redis).Msg("promoted the region's replica to master")
	}
	if ours && oldErr == nil && oldRole == "master" {
		// No stray writer may use the old master: make it a replica of the
		// new one at once (a full sync replaces its data).
		if err := f.replicate(ctx, oldc, old, host, port); err != nil {
			f.log.Warn().Err(err).Str("redis", old).Msg("cannot demote the old master; the replica keeper retries")
		} else {
			f.log.Warn().Str("redis", old).Str("master", r.Redis).Msg("demoted the old master to a replica of the new one")
		}
	}
	f.d.readyMu.Lock()
	defer f.d.readyMu.Unlock()
	if err := f.d.Engine.Repoint(ctx, r.Redis); err != nil {
		return err
	}
	if err := f.d.ensureReadyLocked(ctx); err != nil {
		f.log.Warn().Err(err).Msg("the new master is not ready for writes yet; the guard retries")
	}
	return nil
}

// catchUp waits until the replica has processed the old master's
// replication stream (its offset reaches the master's), at most
// catchUpWait.
func catchUp(ctx context.Context, master, replica *redis.Client) error {
	_, mInfo, err := replication(ctx, master)
	if err != nil {
		return err
	}
	want := mInfo["master_repl_offset"]
	deadline := time.Now().Add(catchUpWait)
	for {
		role, rInfo, err := replication(ctx, replica)
		if err == nil && (role == "master" || offsetAtLeast(rInfo["slave_repl_offset"], want)) {
			return nil // caught up, or promoted meanwhile by another child (after its own catch-up)
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("replica at offset %s, master at %s after %s", rInfo["slave_repl_offset"], want, catchUpWait)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

func offsetAtLeast(have, want string) bool {
	var h, w int64
	_, herr := fmt.Sscan(have, &h)
	_, werr := fmt.Sscan(want, &w)
	return herr == nil && werr == nil && h >= w
}

// probe checks the master and the replica and records what it saw; a
// change is published at once.
func (f *follower) probe(ctx context.Context, r *manager.Region) {
	h := manager.RedisHealth{Master: f.d.Engine.Addr()}
	pctx, cancel := context.WithTimeout(ctx, adminTimeout)
	err := f.d.Engine.Redis().Ping(pctx).Err()
	if err == nil {
		h.MasterOK = true
		h.Writable, err = f.d.Engine.Ready(pctx)
		if err != nil {
			h.MasterError = "checking the ready mark: " + err.Error()
		}
	} else {
		h.MasterError = err.Error()
	}
	cancel()
	if r != nil && r.Replica != "" {
		h.Replica = r.Replica
		_, info, err := replication(ctx, f.client(r.Replica))
		switch {
		case err != nil:
			h.ReplicaLink = err.Error()
		default:
			h.ReplicaOK = true
			h.ReplicaLink = replicaLink(info, r.Redis)
		}
	}
	if ctx.Err() != nil {
		return
	}
	f.mu.Lock()
	was := f.health
	h.Since = was.Since
	if h.MasterOK != was.MasterOK || h.Master != was.Master || h.Since.IsZero() {
		h.Since = time.Now().UTC()
	}
	f.health = h
	f.mu.Unlock()
	if h.MasterOK != was.MasterOK || h.Master != was.Master || h.Writable != was.Writable ||
		h.ReplicaOK != was.ReplicaOK || h.ReplicaLink != was.ReplicaLink {
		if !h.MasterOK && (was.MasterOK || was.Master != h.Master) {
			f.log.Error().Str("redis", h.Master).Str("error", h.MasterError).Msg("the region's Redis master does not answer")
		}
		select {
		case f.changed <- struct{}{}:
		default:
		}
	}
}

// replicaLink describes a replica's link to master from its INFO.
func replicaLink(info map[string]string, master string) string {
	if info["role"] != "slave" {
		return "not a replica of " + master + " (role " + info["role"] + ")"
	}
	if at := net.JoinHostPort(info["master_host"], info["master_port"]); at != master {
		return "not a replica of " + master + " (replica of " + at + ")"
	}
	if info["master_link_status"] == "up" {
		return "up"
	}
	return "down"
}

// keepReplica makes Region.Replica a replica of Region.Redis when it
// answers and is not: after a failover the old master, once back (empty or
// with stale data), becomes the new replica through a full sync. Only the
// holder of the region's "replica" lease acts, and only on the master its
// engine uses and has made writable.
func (f *follower) keepReplica(ctx context.Context, r manager.Region) {
	h := f.snapshot()
	if r.Replica == "" || r.Redis != h.Master || !h.MasterOK || !h.Writable || !h.ReplicaOK || h.ReplicaLink == "up" || h.ReplicaLink == "down" {
		return
	}
	lead, err := f.d.Engine.Lease(ctx, "replica", f.d.cfg.Owner, 3*f.interval+time.Second)
	if err != nil || !lead {
		return
	}
	host, port, err := net.SplitHostPort(r.Redis)
	if err != nil {
		return
	}
	c := f.client(r.Replica)
	actx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	if err := f.replicate(actx, c, r.Replica, host, port); err != nil {
		f.log.Warn().Err(err).Str("replica", r.Replica).Msg("cannot make the replica follow the master")
		return
	}
	f.log.Warn().Str("replica", r.Replica).Str("master", r.Redis).Str("was", h.ReplicaLink).Msg("made the region's replica follow its master (a full sync)")
}

// replicate makes the Redis at addr (client c) a replica of host:port.
// The region's Redis servers share its credentials: when they have a
// password, it is set as the replica's masterauth (and masteruser) first,
// so that the link comes up without configuring that by hand. A Redis
// whose CONFIG command is disabled must have it configured already.
func (f *follower) replicate(ctx context.Context, c *redis.Client, addr, host, port string) error {
	opt := f.d.cfg.Redis
	if opt.Password != "" {
		err := c.ConfigSet(ctx, "masterauth", opt.Password).Err()
		if err == nil && opt.Username != "" {
			err = c.ConfigSet(ctx, "masteruser", opt.Username).Err()
		}
		if err != nil {
			f.log.Warn().Err(err).Str("redis", addr).Msg("cannot set masterauth; the replication link needs it configured in that Redis")
		}
	}
	return c.Do(ctx, "REPLICAOF", host, port).Err()
}

// client returns the follower's admin client of the Redis at addr: the
// region's Redis options (credentials, TLS) with short timeouts and no
// retries.
func (f *follower) client(addr string) *redis.Client {
	f.mu.Lock()
	defer f.mu.Unlock()
	if c, ok := f.admin[addr]; ok {
		return c
	}
	opt := f.d.cfg.Redis
	opt.Addr, opt.DB, opt.Protocol = addr, 0, 2
	opt.MaxRetries = -1
	opt.DialTimeout, opt.ReadTimeout, opt.WriteTimeout = adminTimeout, adminTimeout, adminTimeout
	opt.PoolSize = 2
	c := redis.NewClient(&opt)
	f.admin[addr] = c
	return c
}

func (f *follower) closeAdmin() {
	f.mu.Lock()
	defer f.mu.Unlock()
	for addr, c := range f.admin {
		_ = c.Close()
		delete(f.admin, addr)
	}
}

// replication returns a Redis's role and its INFO replication fields.
func replication(ctx context.Context, c *redis.Client) (string, map[string]string, error) {
	ctx, cancel := context.WithTimeout(ctx, adminTimeout)
	defer cancel()
	s, err := c.Info(ctx, "replication").Result()
	if err != nil {
		return "", nil, err
	}
	info := map[string]string{}
	for _, line := range strings.Split(s, "\n") {
		if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok {
			info[k] = v
		}
	}
	if info["role"] == "" {
		return "", info, errors.New("INFO replication without a role")
	}
	return info["role"], info, nil
}
