package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/globalreplica/globalreplica/manager"
)

func init() { register(newChannelCommand) }

func newChannelCommand(a *app) *cobra.Command {
	cmd := group("channel", "List, inspect and control the channels between regions",
		`A channel origin -> dest applies the ops of the origin region in the
destination region. The destination's children run it; they apply pause,
resume and throttle live, within a moment of the change.`)
	cmd.AddCommand(newChannelList(a), newChannelStatus(a), newChannelPause(a), newChannelResume(a),
		newChannelThrottle(a), newChannelCreate(a), newChannelDelete(a))
	return cmd
}

// pairArgs validates the <origin> <dest> arguments.
func pairArgs(cmd *cobra.Command, args []string) error {
	if err := exactArgs("<origin>", "<dest>")(cmd, args); err != nil {
		return err
	}
	for _, id := range args {
		if err := manager.ValidateRegionID(id); err != nil {
			return err
		}
	}
	if args[0] == args[1] {
		return fmt.Errorf("%w: %s->%s", manager.ErrChannelToItself, args[0], args[1])
	}
	return nil
}

func newChannelList(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the channels and their controls (desired state)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			ctx := cmd.Context()
			s, err := a.store(ctx)
			if err != nil {
				return err
			}
			if _, err := s.GetInstance(ctx); err != nil {
				return err
			}
			cs, err := s.Channels(ctx)
			if err != nil {
				return err
			}
			vs := channelViews(cs)
			return a.print(vs, func(w io.Writer) error { return channelTable(w, vs) })
		},
	}
}

func newChannelStatus(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "status [<origin> <dest>]",
		Short: "Show what the children report: state, lag, rate, last error",
		Long: `Show every channel (or one) as the children of its destination report it in
their heartbeats: state (starting, running, paused, error, needs-rebuild,
stopped), the origin sequence applied, the lag in ops (the origin's last
sequence minus the applied one) and in seconds, the apply rate in ops/s, the
controls and the last error. A channel whose destination has no child with a
fresh heartbeat (younger than 15 s) shows state "unknown" and the reason.
--json prints an array, also for one channel.`,
		Args: func(cmd *cobra.Command, args []string) error {
			if len(args) == 0 {
				return nil
			}
			return pairArgs(cmd, args)
		},
		RunE: func(cmd *cobra.Command, args []string) error {
			ctx := cmd.Context()
			s, err := a.store(ctx)
			if err != nil {
				return err
			}
			if _, err := s.GetInstance(ctx); err != nil {
				return err
			}
			var sts []manager.ChannelStatus
			if len(args) == 2 {
				st, err := s.StatusOf(ctx, args[0], args[1], time.Now())
				if err != nil {
					return err
				}
				sts = []manager.ChannelStatus{st}
			} else if sts, err = s.Status(ctx, time.Now()); err != nil {
				return err
			}
			return a.print(sts, func(w io.Writer) error { return statusTable(w, sts) })
		},
	}
}

// channelChange runs a change of one channel under the lock and prints
// the channel.
func (a *app) channelChange(cmd *cobra.Command, args []string, verb string,
	f func(ctx context.Context, s *manager.Store) (manager.Channel, error),
) error {
	var c manager.Channel
	err := a.mutate(cmd, args, func(ctx context.Context, s *manager.Store) error {
		var err error
		c, err = f(ctx, s)
		return err
	})
	if err != nil {
		return err
	}
	v := newChannelView(c)
	return a.print(v, func(w io.Writer) error {
		_, err := fmt.Fprintf(w, "channel %s->%s %s (paused %t, ops/s %s, bytes/s %s); the children of %s apply it within a moment\n",
			c.Origin, c.Dest, verb, c.Paused, rate(c.OpsPerSec), rate(c.BytesPerSec), c.Dest)
		return err
	})
}

func newChannelPause(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "pause <origin> <dest>",
		Short: "Stop applying the channel's ops in the destination (they wait in the origin's stream)",
		Long: `Pause a channel: the destination stops applying the origin's ops after the
batch in progress. The ops wait in the origin's stream (up to its retention);
'channel resume' catches up from where it stopped.`,
		Args: pairArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.channelChange(cmd, args, "paused", func(ctx context.Context, s *manager.Store) (manager.Channel, error) {
				return s.PauseChannel(ctx, args[0], args[1])
			})
		},
	}
}

func newChannelResume(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "resume <origin> <dest>",
		Short: "Apply a paused channel again, from where it stopped",
		Args:  pairArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.channelChange(cmd, args, "resumed", func(ctx context.Context, s *manager.Store) (manager.Channel, error) {
				return s.ResumeChannel(ctx, args[0], args[1])
			})
		},
	}
}

func newChannelThrottle(a *app) *cobra.Command {
	var ops, bytes float64
	cmd := &cobra.Command{
		Use:   "throttle <origin> <dest> [--ops N] [--bytes M]",
		Short: "Limit the channel's apply rate in ops/s and bytes/s (0: unlimited)",
		Long: `Limit the rate at which the destination applies the channel's ops: --ops in
ops per second, --bytes in bytes per second; 0 removes a limit. A limit not
given keeps its current value.`,
		Example: "  channel-manager channel throttle sgp fra --ops 5000 --bytes 10000000\n  channel-manager channel throttle sgp fra --ops 0 --bytes 0   # unlimited",
		Args:    pairArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			setOps, setBytes := cmd.Flags().Changed("ops"), cmd.Flags().Changed("bytes")
			if !setOps && !setBytes {
				return usageErr("throttle needs --ops and/or --bytes (0: unlimited)")
			}
			if ops < 0 || bytes < 0 {
				return usageErr("--ops and --bytes must be >= 0 (0: unlimited)")
			}
			return a.channelChange(cmd, args, "throttled", func(ctx context.Context, s *manager.Store) (manager.Channel, error) {
				return s.UpdateChannel(ctx, args[0], args[1], func(c *manager.Channel) error {
					if setOps {
						c.OpsPerSec = ops
					}
					if setBytes {
						c.BytesPerSec = bytes
					}
					return nil
				})
			})
		},
	}
	cmd.Flags().Float64Var(&ops, "ops", 0, "ops per second (0: unlimited)")
	cmd.Flags().Float64Var(&bytes, "bytes", 0, "bytes per second (0: unlimited)")
	return cmd
}

func newChannelCreate(a *app) *cobra.Command {
	var c manager.Channel
	cmd := &cobra.Command{
		Use:   "create <origin> <dest>",
		Short: "Create one channel (region add creates them both ways already)",
		Long: `Create the channel origin -> dest between two regions that exist and are not
evicted, optionally paused or throttled. 'region add' creates the channels
both ways with every region already; this brings back one that was deleted.
It resumes from the destination's applied vector.`,
		Args: pairArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c.Origin, c.Dest = args[0], args[1]
			if c.OpsPerSec < 0 || c.BytesPerSec < 0 {
				return usageErr("--ops and --bytes must be >= 0 (0: unlimited)")
			}
			return a.channelChange(cmd, args, "created", func(ctx context.Context, s *manager.Store) (manager.Channel, error) {
				return s.CreateChannel(ctx, c)
			})
		},
	}
	cmd.Flags().BoolVar(&c.Paused, "paused", false, "create it paused")
	cmd.Flags().Float64Var(&c.OpsPerSec, "ops", 0, "throttle in ops per second (0: unlimited)")
	cmd.Flags().Float64Var(&c.BytesPerSec, "bytes", 0, "throttle in bytes per second (0: unlimited)")
	return cmd
}

func newChannelDelete(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "delete <origin> <dest>",
		Short: "Delete one channel: the destination stops applying the origin's ops",
		Long: `Delete the channel origin -> dest: the destination's children stop it. The
destination keeps its position (applied vector), so 'channel create' later
resumes from there, as long as the origin's stream still holds the ops.`,
		Args: pairArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			err := a.mutate(cmd, args, func(ctx context.Context, s *manager.Store) error {
				return s.DeleteChannel(ctx, args[0], args[1])
			})
			if err != nil {
				return err
			}
			v := channelView{Origin: args[0], Dest: args[1]}
			return a.print(map[string]channelView{"deleted": v}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "channel %s->%s deleted\n", args[0], args[1])
				return err
			})
		},
	}
}
