package manager

import (
	"context"
	"errors"
	"time"
)

// FailoverCheck is how often the control loop looks for failed masters.
const FailoverCheck = time.Second

// LoopConfig configures Store.ControlLoop.
type LoopConfig struct {
	// FloorEvery is how often the loop advances the tombstone collection
	// floor; default 5s.
	FloorEvery time.Duration
	// AutoFailover turns the automatic failover on, checked every
	// FailoverCheck (or FloorEvery if shorter); FailoverAfter is how long
	// every child must have seen a master down (default
	// DefaultFailoverAfter).
	AutoFailover  bool
	FailoverAfter time.Duration
	// Once runs one round and returns its error.
	Once bool
	// OnFailover reports a region the loop failed over; OnFloor the floor
	// of a round that advanced it (moved) or of every round with Once. An
	// error of OnFloor ends the loop. Both may be nil.
	OnFailover func(Region, DueFailover)
	OnFloor    func(Floor) error
	// OnError reports a round's error; the loop goes on (may be nil).
	OnError func(what string, err error)
}

// ControlLoop is the manager's control loop (`channel-manager run`, the
// playground): automatic failover and the tombstone collection floor,
// until ctx ends. Several managers may run it: the floor and a failover are
// written with revision checks, so only one of them acts.
func (s *Store) ControlLoop(ctx context.Context, c LoopConfig) error {
	if c.FloorEvery <= 0 {
		c.FloorEvery = 5 * time.Second
	}
	if c.FailoverAfter <= 0 {
		c.FailoverAfter = DefaultFailoverAfter
	}
	report := func(what string, err error) {
		if c.OnError != nil && ctx.Err() == nil {
			c.OnError(what, err)
		}
	}
	t := time.NewTicker(min(c.FloorEvery, FailoverCheck))
	defer t.Stop()
	var floorAt time.Time
	for {
		now := time.Now()
		var roundErr error
		if c.AutoFailover {
			done, due, err := s.AutoFailover(ctx, now, c.FailoverAfter)
			for _, r := range done {
				d := DueFailover{Region: r.ID}
				for _, x := range due {
					if x.Region == r.ID {
						d = x
					}
				}
				if c.OnFailover != nil {
					c.OnFailover(r, d)
				}
			}
			if err != nil {
				roundErr = err
				report("automatic failover", err)
			}
		}
		if c.Once || now.Sub(floorAt) >= c.FloorEvery {
			floorAt = now
			f, moved, err := s.AdvanceFloor(ctx, now)
			switch {
			case err != nil:
				roundErr = errors.Join(roundErr, err)
				report("collection floor", err)
			case (moved || c.Once) && c.OnFloor != nil:
				if err := c.OnFloor(f); err != nil {
					return err
				}
			}
		}
		if c.Once {
			return roundErr
		}
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}
