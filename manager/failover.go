package manager

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"time"
)

// Failover moves a region's writes from its Redis master to its replica.
//
// The manager never connects to a region's Redis: it decides, and records
// the decision in the desired state by swapping Region.Redis and
// Region.Replica (Failover, revision-checked, so that of two managers only
// one swaps). The region's children, which run next to its Redis, follow
// their region's entry: the first to notice promotes the new master
// (REPLICAOF NO ONE), demotes the old one when it answers (REPLICAOF the
// new master), repoints its engine, and makes the new master writable only
// after raising the region's sequence past its own stream and merging back
// the region's ops the promoted replica missed (brief, invariant 1). One
// child of the region then keeps Region.Replica a replica of Region.Redis,
// so that the old master, once back, becomes the new replica (a full
// sync). Children report what they see of both in their heartbeats
// (RedisHealth), which the automatic mode (DueFailovers, AutoFailover)
// and the wait of `channel-manager failover` (WaitServing) read.

// ErrNoReplica is returned by Failover for a region without a replica.
var ErrNoReplica = errors.New("manager: the region has no replica to fail over to (it was added without --replica); nothing was changed")

// DefaultFailoverAfter is how long every child of a region must have seen
// its master down before the automatic mode fails it over.
const DefaultFailoverAfter = 5 * time.Second

// RedisHealth is a child's view of its region's Redis, in its heartbeat.
type RedisHealth struct {
	// Master is the address of the Redis the child uses; MasterOK whether
	// it answered the child's last probe (MasterError says why not), since
	// Since (when MasterOK last changed, as this child saw it).
	Master      string    `json:"master"`
	MasterOK    bool      `json:"master_ok"`
	MasterError string    `json:"master_error,omitempty"`
	Since       time.Time `json:"since"`
	// Writable reports that the master is marked ready for local writes
	// (checked against the region's stream): the child serves writes.
	Writable bool `json:"writable"`
	// Replica is the region's replica (Region.Replica as the child last
	// read it); ReplicaOK whether it answered; ReplicaLink its replication
	// link: "up", "down" (syncing or unreachable master), "not a replica of
	// <master>", or an error.
	Replica     string `json:"replica,omitempty"`
	ReplicaOK   bool   `json:"replica_ok,omitempty"`
	ReplicaLink string `json:"replica_link,omitempty"`
}

// Failover swaps the region's Redis and Replica in the desired state, with
// a revision check: if the region changed since it was read (another
// manager failed it over first), nothing is written and the error wraps
// ErrConflict. A region without a replica gives ErrNoReplica, an evicted
// one ErrEvicted. It returns the region as written.
func (s *Store) Failover(ctx context.Context, region string) (Region, error) {
	var was string
	r, err := s.UpdateRegion(ctx, region, func(r *Region) error {
		switch {
		case r.Evicted:
			return fmt.Errorf("%w: %s", ErrEvicted, r.ID)
		case r.Replica == "":
			return fmt.Errorf("%w: %s", ErrNoReplica, r.ID)
		}
		was = r.Redis
		r.Redis, r.Replica = r.Replica, r.Redis
		r.FailedOver = time.Now().UTC()
		return nil
	})
	if err != nil {
		return Region{}, err
	}
	s.log.Warn().Str("region", region).Str("from", was).Str("to", r.Redis).Msg("failover: the region's master is now its former replica")
	return r, nil
}

// DueFailover is a region that the automatic mode fails over, and why.
type DueFailover struct {
	Region string `json:"region"`
	Reason string `json:"reason"`
}

// DueFailovers returns the regions to fail over at now: regions that are
// not evicted and have a replica, whose children all (every fresh
// heartbeat, at least one) report the region's current master (Region.Redis)
// down since at least after, and of which at least one child reports the
// replica reachable. A region failed over less than after ago is left
// alone, and so is one with a child that still reaches its master or does
// not report its Redis at all: a master that only some children lose is a
// network problem of those children, not a failed master.
func DueFailovers(st State, hbs []Heartbeat, now time.Time, after time.Duration) []DueFailover {
	byRegion := map[string][]Heartbeat{}
	for _, h := range hbs {
		if h.Fresh(now) {
			byRegion[h.Region] = append(byRegion[h.Region], h)
		}
	}
	var out []DueFailover
	for _, r := range st.RegionList() {
		beats := byRegion[r.ID]
		if r.Evicted || r.Replica == "" || len(beats) == 0 || now.Sub(r.FailedOver) < after {
			continue
		}
		down, replica := true, false
		var since time.Time
		for _, h := range beats {
			rh := h.Redis
			if rh == nil || rh.Master != r.Redis || rh.MasterOK || now.Sub(rh.Since) < after {
				down = false
				break
			}
			if since.IsZero() || rh.Since.Before(since) {
				since = rh.Since
			}
			if rh.Replica == r.Replica && rh.ReplicaOK {
				replica = true
			}
		}
		if down && replica {
			out = append(out, DueFailover{Region: r.ID, Reason: fmt.Sprintf(
				"every child (%d) has seen master %s down since %s; replica %s answers",
				len(beats), r.Redis, since.Format(time.RFC3339), r.Replica)})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Region < out[j].Region })
	return out
}

// AutoFailover is one round of the automatic mode: it fails over every
// region that DueFailovers names and returns the regions it swapped. A
// region another manager swapped first (ErrConflict) is skipped; other
// errors are joined.
func (s *Store) AutoFailover(ctx context.Context, now time.Time, after time.Duration) ([]Region, []DueFailover, error) {
	st, err := s.Load(ctx)
	if err != nil {
		return nil, nil, err
	}
	hbs, err := s.Heartbeats(ctx)
	if err != nil {
		return nil, nil, err
	}
	due := DueFailovers(st, hbs, now, after)
	var done []Region
	var errs []error
	for _, d := range due {
		r, err := s.Failover(ctx, d.Region)
		switch {
		case errors.Is(err, ErrConflict):
			s.log.Info().Str("region", d.Region).Msg("failover: the region changed meanwhile (another manager?); checking again next round")
		case err != nil:
			errs = append(errs, fmt.Errorf("manager: failover of %s: %w", d.Region, err))
		default:
			s.log.Warn().Str("region", d.Region).Str("reason", d.Reason).Msg("automatic failover")
			done = append(done, r)
		}
	}
	return done, due, errors.Join(errs...)
}

// WaitServing waits until a fresh heartbeat of region r, published after
// r.FailedOver, shows a child serving writes on r.Redis, and returns it.
// It polls every interval (0: 200ms) until ctx ends.
func (s *Store) WaitServing(ctx context.Context, r Region, interval time.Duration) (Heartbeat, error) {
	if interval <= 0 {
		interval = 200 * time.Millisecond
	}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		hbs, err := s.Heartbeats(ctx)
		if err != nil && ctx.Err() == nil {
			return Heartbeat{}, err
		}
		now := time.Now()
		for _, h := range hbs {
			if h.Region == r.ID && h.Fresh(now) && h.Time.After(r.FailedOver) && Serving(h, r.Redis) {
				return h, nil
			}
		}
		select {
		case <-ctx.Done():
			return Heartbeat{}, ctx.Err()
		case <-t.C:
		}
	}
}

// Serving reports whether a heartbeat shows its child serving writes on
// the Redis at master.
func Serving(h Heartbeat, master string) bool {
	return h.Redis != nil && h.Redis.Master == master && h.Redis.MasterOK && h.Redis.Writable
}
