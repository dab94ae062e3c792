package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/globalreplica/globalreplica/manager"
)

func init() { register(newRegionCommand) }

func newRegionCommand(a *app) *cobra.Command {
	cmd := group("region", "Add, remove, list or evict regions",
		`A region runs writable children on its own Redis and NATS. Adding a region
creates the channels both ways between it and every other region that is not
evicted; the children of every region pick the change up live.`)
	cmd.AddCommand(newRegionAdd(a), newRegionRemove(a), newRegionList(a), newRegionEvict(a))
	return cmd
}

// freshChildren counts the child processes of each region with a fresh
// heartbeat.
func freshChildren(beats []manager.Heartbeat, now time.Time) map[string]int {
	n := map[string]int{}
	for _, h := range beats {
		if h.Fresh(now) {
			n[h.Region]++
		}
	}
	return n
}

func newRegionAdd(a *app) *cobra.Command {
	var r manager.Region
	cmd := &cobra.Command{
		Use:   "add <id> --region-nats <url> --redis <addr> [--replica <addr>]",
		Short: "Add a region and its channels both ways with every other region",
		Long: `Add a region: its id (1-32 characters of a-z, 0-9 and '-', starting with a
letter), the NATS where its stream lives (--region-nats; --nats is the config
store's) and its Redis master, optionally with a replica for failover. The
channels between it and every other region that is not evicted are created
both ways; the children start them without restarting.`,
		Example: "  channel-manager region add fra --region-nats nats://fra.example:4222 --redis 10.1.0.5:6379 --replica 10.1.0.6:6379",
		Args:    exactArgs("<id>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			r.ID = args[0]
			if err := manager.ValidateRegionID(r.ID); err != nil {
				return err
			}
			if r.NATS == "" || r.Redis == "" {
				return usageErr("region add needs --region-nats (the region's NATS URL) and --redis (its Redis master)")
			}
			var ch regionChange
			err := a.mutate(cmd, args, func(ctx context.Context, s *manager.Store) error {
				added, made, err := s.AddRegion(ctx, r)
				ch = regionChange{Region: newRegionView(added, 0), Created: channelViews(made), Removed: []channelView{}}
				return err
			})
			if err != nil {
				return err
			}
			return a.print(ch, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "region %s added; channels created: %s\n", r.ID, pairs(ch.Created))
				return err
			})
		},
	}
	cmd.Flags().StringVar(&r.NATS, "region-nats", "", "URL(s) of the region's NATS, where its stream lives (required)")
	cmd.Flags().StringVar(&r.Redis, "redis", "", "address of the region's Redis master (required)")
	cmd.Flags().StringVar(&r.Replica, "replica", "", "address of the region's Redis replica, for failover")
	return cmd
}

func newRegionRemove(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "remove <id>",
		Short: "Remove a region and every channel from or to it",
		Long: `Remove a region and every channel from or to it. The other regions stop
applying its ops and its children stop theirs. Its data and its stream are
left alone. To stop waiting for a region that is away for too long while
keeping it known, use 'region evict'.`,
		Args: exactArgs("<id>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := manager.ValidateRegionID(args[0]); err != nil {
				return err
			}
			var ch regionChange
			err := a.mutate(cmd, args, func(ctx context.Context, s *manager.Store) error {
				r, err := s.GetRegion(ctx, args[0])
				if err != nil {
					return err
				}
				gone, err := s.RemoveRegion(ctx, args[0])
				ch = regionChange{Region: newRegionView(r, 0), Created: []channelView{}, Removed: channelViews(gone)}
				return err
			})
			if err != nil {
				return err
			}
			return a.print(ch, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "region %s removed; channels removed: %s\n", args[0], pairs(ch.Removed))
				return err
			})
		},
	}
}

func newRegionList(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "list",
		Short: "List the regions, with the number of live children of each",
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
			regions, err := s.Regions(ctx)
			if err != nil {
				return err
			}
			beats, err := s.Heartbeats(ctx)
			if err != nil {
				return err
			}
			children := freshChildren(beats, time.Now())
			vs := make([]regionView, len(regions))
			for i, r := range regions {
				vs[i] = newRegionView(r, children[r.ID])
			}
			return a.print(vs, func(w io.Writer) error { return regionTable(w, vs) })
		},
	}
}

func newRegionEvict(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "evict <id>",
		Short: "Stop waiting for a region that stayed away too long",
		Long: `Evict a region that stayed away too long: it is marked evicted and every
channel from or to it is removed, so the other regions stop waiting for it and
the tombstone floor (the minimum applied vector over the regions that are not
evicted) moves on: tombstones get collected again.

An evicted region cannot come back by itself, since it may have missed
removals whose tombstones are gone: it returns only through
'channel-manager rebuild <id> --from <peer>', which refills it from a peer and
recreates its channels. It stays listed as evicted until then, or until
'region remove'.`,
		Args: exactArgs("<id>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := manager.ValidateRegionID(args[0]); err != nil {
				return err
			}
			var ch regionChange
			err := a.mutate(cmd, args, func(ctx context.Context, s *manager.Store) error {
				r, gone, err := s.EvictRegion(ctx, args[0])
				ch = regionChange{Region: newRegionView(r, 0), Created: []channelView{}, Removed: channelViews(gone)}
				return err
			})
			if err != nil {
				return err
			}
			return a.print(ch, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "region %s evicted; channels removed: %s\nIt can come back only through 'channel-manager rebuild %s --from <peer>'.\n", args[0], pairs(ch.Removed), args[0])
				return err
			})
		},
	}
}
