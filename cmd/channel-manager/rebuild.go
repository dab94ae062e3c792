package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/schollz/progressbar/v3"
	"github.com/spf13/cobra"

	"github.com/globalreplica/globalreplica/channel"
	"github.com/globalreplica/globalreplica/child"
	"github.com/globalreplica/globalreplica/manager"
)

func init() { register(newRebuildCommand) }

// rebuildPoll is how often the CLI reads a running rebuild's progress.
const rebuildPoll = 200 * time.Millisecond

// rebuildView is the JSON of rebuild.
type rebuildView struct {
	Region          string            `json:"region"`
	From            string            `json:"from"`
	ID              string            `json:"id"`
	Phase           string            `json:"phase"` // done, failed, or the phase reached when the wait ended
	Error           string            `json:"error"`
	Readmitted      bool              `json:"readmitted"` // the region was evicted and is active again
	ChannelsCreated []channelView     `json:"channels_created"`
	KeysCopied      int64             `json:"keys_copied"`
	OwnOpsMerged    int64             `json:"own_ops_merged"`
	OpsReplayed     uint64            `json:"ops_replayed"`
	Position        map[string]uint64 `json:"position"` // the peer's position the copy started from
	Duration        string            `json:"duration"`
}

func newRebuildCommand(a *app) *cobra.Command {
	var from string
	var timeout time.Duration
	var quiet bool
	cmd := &cobra.Command{
		Use:   "rebuild <region> --from <peer>",
		Short: "Refill a region that lost its data or fell out of retention from a peer",
		Long: `Rebuild a region from a peer: the region's children stop its inbound
channels and refuse local writes (TRYAGAIN), record the peer's position
(its applied vector), copy the peer's keys with their CRDT state (each key
atomically, tombstones included, with DUMP/RESTORE: both regions must run the
same Redis major version), merge back the region's own ops that the peer
lacked, and serve again while its channels replay every origin from the
recorded position (safe: applying an op twice changes nothing).

Use it for a region whose channel stopped in needs-rebuild (an origin's
stream no longer holds the ops it needs), whose Redis lost its data, or that
was evicted: rebuilding an evicted region readmits it and recreates its
channels.

Before anything changes, the command checks that a child of the region runs,
that the peer answers and that the peer is not itself behind (every origin's
stream still holds the ops after the peer's position). It shows the keys
copied, then the ops replayed, and exits 0 once the region serves again and
has replayed up to where the streams stood when it began serving.`,
		Example: "  channel-manager rebuild fra --from sgp",
		Args:    exactArgs("<region>"),
		RunE: func(cmd *cobra.Command, args []string) error {
			target := args[0]
			if err := manager.ValidateRegionID(target); err != nil {
				return err
			}
			if from == "" {
				return usageErr("rebuild needs --from <peer>: the region whose state is copied")
			}
			if err := manager.ValidateRegionID(from); err != nil {
				return err
			}
			if from == target {
				return usageErr("a region cannot be rebuilt from itself (%s): name another region with --from", target)
			}
			if timeout <= 0 {
				return usageErr("--timeout %s: a positive duration", timeout)
			}
			var v rebuildView
			var store *manager.Store
			started := time.Now()
			// The checks and the request under the manager lock; the wait
			// without it (the request itself keeps a second rebuild of the
			// region out, and other commands need not wait for a long copy).
			err := a.mutate(cmd, args, func(ctx context.Context, s *manager.Store) error {
				st, err := a.rebuildPrecheck(ctx, s, target, from)
				if err != nil {
					return err
				}
				id := uuid.NewString()
				rb, made, err := s.RequestRebuild(ctx, target, from, id)
				if err != nil {
					return err
				}
				v = rebuildView{
					Region: target, From: from, ID: rb.ID, Phase: rb.Phase,
					Readmitted: st.Regions[target].Evicted, ChannelsCreated: channelViews(made),
					Position: map[string]uint64{},
				}
				store = s
				return nil
			})
			if err != nil || v.ID == "" { // refused: nothing changed
				return err
			}
			ctx := cmd.Context()
			wctx, cancel := context.WithTimeout(ctx, timeout)
			defer cancel()
			err = a.waitRebuild(wctx, store, &v, quiet)
			v.Duration = time.Since(started).Round(time.Millisecond).String()
			if err != nil && errors.Is(err, context.DeadlineExceeded) && ctx.Err() == nil {
				err = fmt.Errorf("channel-manager: rebuild of %s not finished within %s (phase %s); it goes on in the region's children: follow it with 'channel-manager channel status', run rebuild again once it failed", target, timeout, v.Phase)
			}
			perr := a.print(v, func(w io.Writer) error {
				if v.Phase != manager.RebuildDone {
					return nil
				}
				_, err := fmt.Fprintf(w, "region %s rebuilt from %s in %s: %d keys copied, %d own ops merged back, %d ops replayed; it serves again\n",
					target, from, v.Duration, v.KeysCopied, v.OwnOpsMerged, v.OpsReplayed)
				return err
			})
			if err != nil {
				return err
			}
			return perr
		},
	}
	cmd.Flags().StringVar(&from, "from", "", "the peer region whose state is copied (required)")
	cmd.Flags().DurationVar(&timeout, "timeout", 30*time.Minute, "how long to wait for the rebuild to finish")
	cmd.Flags().BoolVar(&quiet, "quiet", false, "no progress bars on stderr")
	return cmd
}

// rebuildPrecheck refuses a rebuild that cannot work, before anything
// changes: unknown regions, an evicted peer, a rebuild running already, no
// running child in the target, an unreachable peer, a peer that is itself
// behind.
func (a *app) rebuildPrecheck(ctx context.Context, s *manager.Store, target, from string) (manager.State, error) {
	st, err := s.Load(ctx)
	if err != nil {
		return st, err
	}
	if st.Instance == nil {
		return st, fmt.Errorf("%w: %s", manager.ErrNoInstance, s.Instance())
	}
	t, ok := st.Regions[target]
	if !ok {
		return st, fmt.Errorf("%w: %s", manager.ErrNoRegion, target)
	}
	p, ok := st.Regions[from]
	if !ok {
		return st, fmt.Errorf("%w: %s (the peer)", manager.ErrNoRegion, from)
	}
	if p.Evicted {
		return st, fmt.Errorf("%w: %s is evicted and cannot serve a rebuild; rebuild from an active region", manager.ErrEvicted, from)
	}
	if t.Rebuild.Active() {
		return st, fmt.Errorf("%w: %s from %s, phase %s", manager.ErrRebuildRunning, target, t.Rebuild.From, t.Rebuild.Phase)
	}
	beats, err := s.Heartbeats(ctx)
	if err != nil {
		return st, err
	}
	if freshChildren(beats, time.Now())[target] == 0 {
		return st, fmt.Errorf("channel-manager: region %s has no running child (no fresh heartbeat): start its child, which does the rebuild, then run this again; nothing was changed", target)
	}
	// The peer's position, then every origin's stream against it.
	pnc, err := a.regionDial(p.NATS)
	if err != nil {
		return st, fmt.Errorf("channel-manager: the peer %s is unreachable: its NATS at %s: %w; nothing was changed", from, p.NATS, err)
	}
	defer pnc.Close()
	var pos child.PositionReply
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	msg, err := pnc.RequestWithContext(rctx, child.ControlSubject(s.Instance(), from)+"."+child.CtlPosition, []byte("{}"))
	if err == nil {
		err = jsonReply(msg.Data, msg.Header.Get("Nats-Service-Error"), &pos)
	}
	if err != nil {
		return st, fmt.Errorf("channel-manager: the peer %s is unreachable: no child answers on its NATS (%w); nothing was changed", from, err)
	}
	position := map[string]uint64{}
	for k, v := range pos.Applied {
		position[k] = v
	}
	position[from] = pos.Seq
	streams := map[string]manager.StreamRange{}
	var origins []string
	for _, r := range st.RegionList() {
		if r.Evicted && r.ID != target {
			continue
		}
		origins = append(origins, r.ID)
		sr, err := a.streamRange(ctx, s.Instance(), r)
		if err != nil {
			return st, fmt.Errorf("channel-manager: cannot check the stream of %s: %w; nothing was changed", r.ID, err)
		}
		streams[r.ID] = sr
	}
	sort.Strings(origins)
	if err := manager.CheckRebuildPosition(from, position, origins, streams); err != nil {
		return st, fmt.Errorf("%w; nothing was changed", err)
	}
	return st, nil
}

// streamRange reads what a region's stream holds, on the region's NATS.
func (a *app) streamRange(ctx context.Context, instance string, r manager.Region) (manager.StreamRange, error) {
	nc, err := a.regionDial(r.NATS)
	if err != nil {
		return manager.StreamRange{}, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return manager.StreamRange{}, err
	}
	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	stream, err := js.Stream(rctx, channel.StreamName(instance, r.ID))
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return manager.StreamRange{First: 1}, nil
	}
	if err != nil {
		return manager.StreamRange{}, err
	}
	info, err := stream.Info(rctx)
	if err != nil {
		return manager.StreamRange{}, err
	}
	return manager.StreamRange{First: info.State.FirstSeq, Last: info.State.LastSeq}, nil
}

// waitRebuild follows the rebuild v.ID until it is done or failed, with
// progress bars on stderr: keys copied, then ops replayed.
func (a *app) waitRebuild(ctx context.Context, s *manager.Store, v *rebuildView, quiet bool) error {
	var keysBar, opsBar *progressbar.ProgressBar
	bar := func(total int64, what string) *progressbar.ProgressBar {
		if quiet {
			return nil
		}
		return progressbar.NewOptions64(max(total, 1),
			progressbar.OptionSetWriter(a.stderr),
			progressbar.OptionSetDescription(fmt.Sprintf("%s: %s", v.Region, what)),
			progressbar.OptionShowCount(),
			progressbar.OptionSetWidth(30),
			progressbar.OptionThrottle(250*time.Millisecond),
			progressbar.OptionOnCompletion(func() { _, _ = fmt.Fprintln(a.stderr) }),
		)
	}
	finish := func(b *progressbar.ProgressBar) {
		if b != nil && !b.IsFinished() {
			_ = b.Finish()
		}
	}
	defer func() { finish(keysBar); finish(opsBar) }()
	t := time.NewTicker(rebuildPoll)
	defer t.Stop()
	for {
		r, err := s.GetRegion(ctx, v.Region)
		if err != nil {
			return err
		}
		rb := r.Rebuild
		if rb == nil || rb.ID != v.ID {
			return fmt.Errorf("%w: %s", manager.ErrRebuildGone, v.ID)
		}
		v.Phase, v.Error = rb.Phase, rb.Error
		if rb.Position != nil {
			v.Position = rb.Position
		}
		var prog *manager.RebuildProgress
		if beats, err := s.Heartbeats(ctx); err == nil {
			for _, h := range beats {
				if h.Region == v.Region && h.Rebuild != nil && h.Rebuild.ID == v.ID {
					prog = h.Rebuild
				}
			}
		}
		if prog != nil {
			v.KeysCopied, v.OwnOpsMerged, v.OpsReplayed = prog.KeysCopied, prog.OpsMerged, prog.OpsDone
			if prog.KeysTotal > 0 && keysBar == nil && opsBar == nil {
				keysBar = bar(prog.KeysTotal, "keys copied")
			}
			if keysBar != nil {
				if int64(keysBar.GetMax()) < prog.KeysCopied { // the total was an estimate
					keysBar.ChangeMax64(prog.KeysCopied)
				}
				_ = keysBar.Set64(prog.KeysCopied)
			}
			if prog.Phase == manager.RebuildReplaying || prog.Phase == manager.RebuildDone {
				if opsBar == nil {
					if keysBar != nil {
						keysBar.ChangeMax64(max(prog.KeysCopied, 1))
						_ = keysBar.Set64(prog.KeysCopied)
						finish(keysBar)
					}
					opsBar = bar(int64(prog.OpsTarget), "ops replayed")
				}
				if opsBar != nil {
					_ = opsBar.Set64(int64(prog.OpsDone))
				}
			}
		}
		switch rb.Phase {
		case manager.RebuildDone:
			v.KeysCopied, v.OpsReplayed = max(v.KeysCopied, rb.Keys), max(v.OpsReplayed, rb.Replayed)
			if opsBar != nil {
				opsBar.ChangeMax64(max(int64(v.OpsReplayed), 1))
				_ = opsBar.Set64(max(int64(v.OpsReplayed), 1))
			}
			return nil
		case manager.RebuildFailed:
			return fmt.Errorf("channel-manager: rebuild of %s from %s failed: %s", v.Region, v.From, rb.Error)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-t.C:
		}
	}
}

// jsonReply decodes a control reply, or returns the service error it carries.
func jsonReply(data []byte, svcErr string, v any) error {
	if svcErr != "" {
		return errors.New(svcErr)
	}
	return json.Unmarshal(data, v)
}
