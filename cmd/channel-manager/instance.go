package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/spf13/cobra"

	"github.com/globalreplica/globalreplica/manager"
)

func init() { register(newInstanceCommand) }

func newInstanceCommand(a *app) *cobra.Command {
	cmd := group("instance", "Create, show or delete the global instance",
		`A global instance spans several regions. Its desired state lives in the
NATS KV bucket gr-config-<name>, its children's heartbeats in
gr-heartbeat-<name>.`)
	cmd.AddCommand(newInstanceCreate(a), newInstanceShow(a), newInstanceDelete(a))
	return cmd
}

// instanceArg takes the instance name from the argument, or from
// --instance / $GR_INSTANCE; both must agree.
func (a *app) instanceArg(args []string) (string, error) {
	if len(args) == 0 {
		return a.instanceName()
	}
	if a.g.instance != "" && a.g.instance != args[0] {
		return "", usageErr("the argument names instance %q but --instance / $GR_INSTANCE says %q", args[0], a.g.instance)
	}
	a.g.instance = args[0]
	return args[0], nil
}

func maxArgs(n int, names string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) > n {
			return usageErr("%s takes at most %d argument(s): %s", cmd.CommandPath(), n, names)
		}
		return nil
	}
}

func newInstanceCreate(a *app) *cobra.Command {
	var (
		retention time.Duration
		replicas  int
	)
	cmd := &cobra.Command{
		Use:   "create [name]",
		Short: "Create the global instance (its buckets and its record)",
		Long: `Create the global instance: its config and heartbeat buckets (with
--replicas copies on a clustered NATS) and its record. The name is the
argument or --instance; 1-32 characters of a-z, 0-9 and '-', starting with a
letter. --retention is how long each region's stream keeps ops, that is how
long a region may stay away and still resume without a rebuild.`,
		Example: "  channel-manager instance create shop --retention 168h",
		Args:    maxArgs(1, "name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := a.instanceArg(args)
			if err != nil {
				return err
			}
			if retention <= 0 {
				return usageErr("--retention %s: a positive duration like 168h", retention)
			}
			js, err := a.jetStream()
			if err != nil {
				return err
			}
			s, err := manager.Open(cmd.Context(), js, name, manager.WithReplicas(replicas), manager.WithLogger(a.log))
			if err != nil {
				return err
			}
			var in manager.Instance
			err = a.locked(cmd, args, s, func(ctx context.Context, s *manager.Store, _ *manager.Lock) error {
				in, err = s.CreateInstance(ctx, manager.Instance{Retention: retention})
				return err
			})
			if err != nil {
				return err
			}
			v := newInstanceView(in, manager.NewState(), nil)
			return a.print(v, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "instance %s created (retention %s, config bucket %s)\n", in.Name, in.Retention, v.ConfigBucket)
				return err
			})
		},
	}
	cmd.Flags().DurationVar(&retention, "retention", manager.DefaultRetention, "how long each region's stream keeps ops")
	cmd.Flags().IntVar(&replicas, "replicas", 1, "copies of the buckets on a clustered NATS (1-5)")
	return cmd
}

func newInstanceShow(a *app) *cobra.Command {
	return &cobra.Command{
		Use:   "show [name]",
		Short: "Show the instance: retention, regions, channels and the lock",
		Args:  maxArgs(1, "name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if _, err := a.instanceArg(args); err != nil {
				return err
			}
			ctx := cmd.Context()
			s, err := a.store(ctx)
			if err != nil {
				return err
			}
			in, err := s.GetInstance(ctx)
			if err != nil {
				return err
			}
			st, err := s.Load(ctx)
			if err != nil {
				return err
			}
			lock, held, err := s.LockHolder(ctx)
			if err != nil {
				return err
			}
			var lp *manager.LockInfo
			if held {
				lp = &lock
			}
			v := newInstanceView(in, st, lp)
			return a.print(v, func(w io.Writer) error { return instanceTable(w, v) })
		},
	}
}

func newInstanceDelete(a *app) *cobra.Command {
	var force bool
	cmd := &cobra.Command{
		Use:   "delete [name]",
		Short: "Delete the instance with its desired state and heartbeats",
		Long: `Delete the instance: its config and heartbeat buckets. It refuses while the
instance has regions unless --force. The children of its regions stop their
channels when they notice; the regions' data and streams are left alone
(streams age out with their retention).`,
		Args: maxArgs(1, "name"),
		RunE: func(cmd *cobra.Command, args []string) error {
			name, err := a.instanceArg(args)
			if err != nil {
				return err
			}
			err = a.mutate(cmd, args, func(ctx context.Context, s *manager.Store) error { return s.DeleteInstance(ctx, force) })
			if err != nil {
				return err
			}
			return a.print(map[string]any{"deleted": name}, func(w io.Writer) error {
				_, err := fmt.Fprintf(w, "instance %s deleted\n", name)
				return err
			})
		},
	}
	cmd.Flags().BoolVar(&force, "force", false, "delete even while the instance has regions")
	return cmd
}
