package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/globalreplica/globalreplica/manager"
)

func init() { register(newFailoverCommand) }

// failoverView is the JSON of `failover`.
type failoverView struct {
	Region     string    `json:"region"`
	Master     string    `json:"master"`      // the new master (the former replica)
	Replica    string    `json:"replica"`     // the new replica (the former master)
	FailedOver time.Time `json:"failed_over"` // when the desired state was swapped
	Waited     bool      `json:"waited"`      // --wait: the wait ran
	Serving    bool      `json:"serving"`     // a child reported serving writes on the new master
	Child      string    `json:"child"`       // the child that reported it, "" if none
	Took       string    `json:"took"`        // from the swap to that report
}

func newFailoverCommand(a *app) *cobra.Command {
	wait := true
	timeout := time.Minute
	cmd := &cobra.Command{
		Use:   "failover <region>",
		Short: "Fail a region's Redis master over to its replica",
		Long: `Fails a region's Redis master over to its replica: the desired state swaps
the region's master and replica (with a revision check, under the manager
lock, so two managers cannot both do it). The manager never connects to the
region's Redis; the region's children do the work when they see the change:
they promote the replica (REPLICAOF NO ONE), demote the old master when it
answers (REPLICAOF <new master>; a planned failover first pauses its writes
and lets the replica catch up), switch their engine to the new master and
serve writes again only after raising the region's sequence past its own
stream and merging back the region's ops the replica had missed, so that no
OpID is ever issued twice. Until then clients get TRYAGAIN. One child of the
region then keeps the old master, once back, a replica of the new one.

With --wait (the default) the command waits until a child of the region
reports serving writes on the new master, at most --timeout; exit code 1 if
none does in time (the swap stays recorded). A region without a replica is
refused with exit code 2 and nothing changes. 'channel-manager run' fails
over automatically when every child of a region reports its master down.`,
		Example: "  channel-manager failover fra\n  channel-manager failover fra --wait=false --json",
		Args:    exactArgs("<region>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := manager.ValidateRegionID(args[0]); err != nil {
				return err
			}
			if timeout <= 0 {
				return usageErr("--timeout %s: a positive duration", timeout)
			}
			var r manager.Region
			err := a.mutate(cmd, args, func(ctx context.Context, s *manager.Store) error {
				var err error
				r, err = s.Failover(ctx, args[0])
				return err
			})
			if errors.Is(err, manager.ErrNoReplica) {
				return exitWith(exitUsage, err)
			}
			if err != nil {
				return err
			}
			v := failoverView{Region: r.ID, Master: r.Redis, Replica: r.Replica, FailedOver: r.FailedOver, Waited: wait}
			var werr error
			if wait {
				s, err := a.store(cmd.Context())
				if err != nil {
					return err
				}
				ctx, cancel := context.WithTimeout(cmd.Context(), timeout)
				h, err := s.WaitServing(ctx, r, 0)
				cancel()
				if err == nil {
					v.Serving, v.Child, v.Took = true, h.Owner, time.Since(r.FailedOver).Round(time.Millisecond).String()
				} else {
					werr = fmt.Errorf("channel-manager: %s failed over to %s in the desired state, but no child of %s reported serving writes on it within %s (%w); check its children's logs and `channel-manager channel status`", r.ID, r.Redis, r.ID, timeout, err)
				}
			}
			if err := a.print(v, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "region %s failed over: master %s, replica %s\n", v.Region, v.Master, v.Replica)
				if err == nil && v.Serving {
					_, err = fmt.Fprintf(w, "serving writes on %s (child %s, after %s)\n", v.Master, v.Child, v.Took)
				}
				return err
			}); err != nil {
				return err
			}
			if werr != nil {
				return exitWith(exitFailure, werr)
			}
			return nil
		},
	}
	cmd.Flags().BoolVar(&wait, "wait", true, "wait until a child of the region serves writes on the new master")
	cmd.Flags().DurationVar(&timeout, "timeout", time.Minute, "how long --wait waits")
	return cmd
}
