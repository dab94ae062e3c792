// Command playground runs a global instance of several regions on one
// machine: `go tool task demo` (flags after --: --regions, --port-base,
// --data). Each region is a real redis-server, an embedded NATS server with
// JetStream and a child; applications connect with any Redis client to the
// addresses it prints.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/globalreplica/globalreplica/internal/daemon"
	"github.com/globalreplica/globalreplica/internal/playground"
)

func main() {
	daemon.TuneGC()
	var cfg playground.Config
	var verbose bool
	cmd := &cobra.Command{
		Use:   "playground",
		Short: "Run a Global Replica instance of several regions on this machine",
		Long: `Starts a global instance of several regions on one machine. Each region runs a
real redis-server, an embedded NATS server with JetStream and a child endpoint;
every region replicates to every other. The channel manager runs too: its
config store on an embedded NATS server of its own, and its control loop. It
prints one line per region and one for the manager:

  region <id> redis://127.0.0.1:<port>
  manager nats://127.0.0.1:<port>

Point redis-cli (or any client) at a region and watch writes appear in the
others; point channel-manager --nats at the manager's URL to see and steer
the channels (channel status, channel pause, verify, conflicts). Stop with Ctrl-C. State lives in a temporary folder unless --data is set.`,
		SilenceUsage: true,
		RunE: func(cmd *cobra.Command, _ []string) error {
			level := zerolog.WarnLevel
			if verbose {
				level = zerolog.InfoLevel
			}
			cfg.Log = zerolog.New(zerolog.ConsoleWriter{Out: os.Stderr, TimeFormat: time.TimeOnly}).Level(level).With().Timestamp().Logger()
			ctx, stop := signal.NotifyContext(cmd.Context(), os.Interrupt, syscall.SIGTERM)
			defer stop()
			p, err := playground.Start(ctx, cfg)
			if err != nil {
				return err
			}
			out := cmd.OutOrStdout()
			p.Describe(out)
			_, _ = fmt.Fprintln(out, "# press Ctrl-C to stop")
			err = p.Run(ctx)
			_, _ = fmt.Fprintln(out, "# stopped")
			return err
		},
	}
	cmd.Flags().IntVar(&cfg.Regions, "regions", 3, "number of regions (1-10)")
	cmd.Flags().IntVar(&cfg.PortBase, "port-base", 7000, "region i's endpoint listens on port-base+i")
	cmd.Flags().StringVar(&cfg.DataDir, "data", "", "folder for Redis and NATS data (default: a temporary folder, removed at exit)")
	cmd.Flags().StringVar(&cfg.Instance, "instance", "demo", "global instance name")
	cmd.Flags().BoolVarP(&verbose, "verbose", "v", false, "log at info level")
	cmd.Flags().BoolVar(&cfg.EmbeddedRedis, "embedded-redis", false, "use the embedded development-only Redis even if redis-server is installed (it is used anyway when redis-server is missing)")
	if err := cmd.ExecuteContext(context.Background()); err != nil {
		os.Exit(1)
	}
}
