package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/globalreplica/globalreplica/manager"
)

func init() { register(newRunCommand) }

// failoverCheck is how often the control loop looks for failed masters.
const failoverCheck = time.Second

// newRunCommand is the manager's control loop.
func newRunCommand(a *app) *cobra.Command {
	var every, failoverAfter time.Duration
	var once, auto bool
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the control loop: tombstone collection floor and automatic failover",
		Long: `Runs the manager's control loop until interrupted.

Every interval it reads the children's heartbeats and, when every region that
is not evicted has reported its position, writes the collection floor (the
lowest sequence of each origin applied by every such region; it never moves
back) and prints it when it moved (with --once: prints it anyway, empty while
some region has not reported). Children collect the tombstones below it.
With --json each floor is printed as {"applied":...,"at":...}.

Every second (with --auto-failover, the default) it fails over each region
whose children all report its Redis master down for at least
--failover-after while one of them reaches the region's replica, as
'channel-manager failover' does, and prints it (--json:
{"region":...,"reason":...}). A master that only some
children lose is left alone (their network, not the master).

Several managers may run the loop: the floor and the failover are written
with a revision check, so only one of them acts.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if every <= 0 || failoverAfter <= 0 {
				return usageErr("--interval and --failover-after must be positive durations")
			}
			ctx := cmd.Context()
			s, err := a.store(ctx)
			if err != nil {
				return err
			}
			t := time.NewTicker(min(every, failoverCheck))
			defer t.Stop()
			var floorAt time.Time
			for {
				now := time.Now()
				var roundErr error
				if auto {
					if err := a.autoFailover(ctx, s, now, failoverAfter); err != nil && ctx.Err() == nil {
						roundErr = err
						a.log.Warn().Err(err).Msg("automatic failover round failed")
					}
				}
				if once || now.Sub(floorAt) >= every {
					floorAt = now
					f, moved, err := s.AdvanceFloor(ctx, now)
					switch {
					case err != nil && ctx.Err() == nil:
						roundErr = err
						a.log.Warn().Err(err).Msg("control loop round failed")
					case moved || once:
						if err := a.print(f, func(w io.Writer) error {
							_, err := fmt.Fprintf(w, "%s collection floor %v\n", f.At.Format(time.TimeOnly), f.Applied)
							return err
						}); err != nil {
							return err
						}
					}
				}
				if once {
					return roundErr
				}
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
				}
			}
		},
	}
	cmd.Flags().DurationVar(&every, "interval", 5*time.Second, "how often the loop advances the collection floor")
	cmd.Flags().BoolVar(&once, "once", false, "run one round and exit")
	cmd.Flags().BoolVar(&auto, "auto-failover", true, "fail over regions whose master every child reports down")
	cmd.Flags().DurationVar(&failoverAfter, "failover-after", manager.DefaultFailoverAfter, "how long every child must have seen the master down before the loop fails it over")
	return cmd
}

// autoFailover runs one round of the automatic failover and prints what
// it did.
func (a *app) autoFailover(ctx context.Context, s *manager.Store, now time.Time, after time.Duration) error {
	done, due, err := s.AutoFailover(ctx, now, after)
	for _, r := range done {
		d := manager.DueFailover{Region: r.ID}
		for _, x := range due {
			if x.Region == r.ID {
				d = x
			}
		}
		a.log.Warn().Str("region", r.ID).Str("master", r.Redis).Str("replica", r.Replica).Str("reason", d.Reason).Msg("automatic failover")
		if perr := a.print(d, func(w io.Writer) error {
			_, err := fmt.Fprintf(w, "%s failover of %s: master %s, replica %s (%s)\n", now.Format(time.TimeOnly), r.ID, r.Redis, r.Replica, d.Reason)
			return err
		}); perr != nil {
			return perr
		}
	}
	return err
}
