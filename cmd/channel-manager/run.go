package main

import (
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/globalreplica/globalreplica/manager"
)

func init() { register(newRunCommand) }

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
			var printErr error
			err = s.ControlLoop(ctx, manager.LoopConfig{
				FloorEvery: every, AutoFailover: auto, FailoverAfter: failoverAfter, Once: once,
				OnFailover: func(r manager.Region, d manager.DueFailover) {
					a.log.Warn().Str("region", r.ID).Str("master", r.Redis).Str("replica", r.Replica).Str("reason", d.Reason).Msg("automatic failover")
					printErr = errors.Join(printErr, a.print(d, func(w io.Writer) error {
						_, err := fmt.Fprintf(w, "%s failover of %s: master %s, replica %s (%s)\n", time.Now().Format(time.TimeOnly), r.ID, r.Redis, r.Replica, d.Reason)
						return err
					}))
				},
				OnFloor: func(f manager.Floor) error {
					return a.print(f, func(w io.Writer) error {
						_, err := fmt.Fprintf(w, "%s collection floor %v\n", f.At.Format(time.TimeOnly), f.Applied)
						return err
					})
				},
				OnError: func(what string, err error) {
					a.log.Warn().Err(err).Msg(what + " round failed")
				},
			})
			return errors.Join(err, printErr)
		},
	}
	cmd.Flags().DurationVar(&every, "interval", 5*time.Second, "how often the loop advances the collection floor")
	cmd.Flags().BoolVar(&once, "once", false, "run one round and exit")
	cmd.Flags().BoolVar(&auto, "auto-failover", true, "fail over regions whose master every child reports down")
	cmd.Flags().DurationVar(&failoverAfter, "failover-after", manager.DefaultFailoverAfter, "how long every child must have seen the master down before the loop fails it over")
	return cmd
}
