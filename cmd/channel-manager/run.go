package main

import (
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"
)

func init() { register(newRunCommand) }

// newRunCommand is the manager's control loop.
func newRunCommand(a *app) *cobra.Command {
	var every time.Duration
	var once bool
	cmd := &cobra.Command{
		Use:   "run",
		Short: "Run the control loop: advance the tombstone collection floor",
		Long: `Runs the manager's control loop until interrupted. Every interval it reads the
children's heartbeats and, when every region that is not evicted has reported
its position, writes the collection floor (the lowest sequence of each origin
applied by every such region; it never moves back) and prints it when it
moved (with --once: prints it anyway, empty while some region has not
reported). Children collect the
tombstones below it. Several managers may run the loop: the floor is written
with a revision check.

Not yet part of the loop: automatic failover of a region's Redis to its
replica (see the channel-manager issue).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			s, err := a.store(ctx)
			if err != nil {
				return err
			}
			t := time.NewTicker(every)
			defer t.Stop()
			for {
				f, moved, err := s.AdvanceFloor(ctx, time.Now())
				switch {
				case err != nil && ctx.Err() == nil:
					a.log.Warn().Err(err).Msg("control loop round failed")
				case moved || once:
					if err := a.print(f, func(w io.Writer) error {
						_, err := fmt.Fprintf(w, "%s collection floor %v\n", f.At.Format(time.TimeOnly), f.Applied)
						return err
					}); err != nil {
						return err
					}
				}
				if once {
					return err
				}
				select {
				case <-ctx.Done():
					return nil
				case <-t.C:
				}
			}
		},
	}
	cmd.Flags().DurationVar(&every, "interval", 5*time.Second, "how often the loop runs")
	cmd.Flags().BoolVar(&once, "once", false, "run one round and exit")
	return cmd
}
