// Command child is the region daemon of a Global Replica instance: the
// writable Redis-protocol endpoint that applications of one region talk
// to. It keeps its data in the region's redis-server and answers with
// Redis's own replies; its writes become CRDT ops that replicate to the
// other regions.
//
// Run `child --help` for the flags, `child --commands` for the commands.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/globalreplica/globalreplica/child"
	"github.com/globalreplica/globalreplica/internal/daemon"
)

// Exit codes.
const (
	exitOK      = 0
	exitFailure = 1 // the daemon failed while starting or running
	exitUsage   = 2 // bad flags, environment or config file
)

// redisConnectTimeout bounds the first contact with the redis-server.
const redisConnectTimeout = 5 * time.Second

func main() {
	daemon.TuneGC()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run is the whole daemon; it returns the exit code. It serves until ctx
// ends (SIGINT or SIGTERM in main).
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	code := exitOK
	cmd := &cobra.Command{
		Use:   "child --instance NAME --region ID [flags]",
		Short: "The region daemon of a Global Replica instance: a writable Redis endpoint",
		Long: `child is the region daemon of a Global Replica instance. Applications of the
region connect to it with any Redis client (RESP2; clients that try RESP3
first, like go-redis v9, fall back on their own). It keeps its data in the
region's redis-server and turns every write into a CRDT op, so that writes
made in any region converge everywhere.

Configuration comes from flags, then environment variables, then an optional
config file (--config or $GR_CONFIG), then defaults: a flag beats the
environment, which beats the file. The config file is JSON (.json) or YAML
(.yaml, .yml) with the flag names as keys, for example:

  instance: shop
  region: fra
  listen: 0.0.0.0:6380
  redis: 10.0.0.5:6379
  max-value-bytes: 16mb

Commands that cannot converge across regions (FLUSHALL, RENAME, EVAL, MULTI,
blocking pops, ...) are refused with "ERR <COMMAND> is not supported in
active-active mode: <reason>"; --commands lists every command.

The daemon stops cleanly on SIGINT or SIGTERM: it stops accepting, answers
the commands it has received, and closes. Exit codes: 0 after a clean stop,
1 when it fails, 2 for bad flags or configuration.`,
		Version:       child.Version,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args: func(_ *cobra.Command, args []string) error {
			if len(args) > 0 {
				return fmt.Errorf("%w: unexpected argument %q (the daemon takes flags only)", errUsage, args[0])
			}
			return nil
		},
		RunE: func(cmd *cobra.Command, _ []string) error {
			if list, _ := cmd.Flags().GetBool("commands"); list {
				return child.WriteCommandHelp(stdout)
			}
			cfg, err := resolveConfig(cmd.Flags(), getenv)
			if err != nil {
				return err
			}
			return serve(ctx, cfg, stderr)
		},
	}
	cmd.SetArgs(args)
	cmd.SetOut(stdout)
	cmd.SetErr(stderr)
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return fmt.Errorf("%w: %w", errUsage, err) })
	addFlags(cmd.Flags())
	cmd.Flags().Bool("commands", false, "print the supported and refused commands and exit")
	cmd.Flags().SortFlags = false

	if err := cmd.Execute(); err != nil {
		code = exitFailure
		if errors.Is(err, errUsage) {
			code = exitUsage
			_, _ = fmt.Fprintf(stderr, "child: %s\nRun 'child --help' for usage.\n", trimUsage(err))
		} else {
			msg := err.Error()
			if !strings.HasPrefix(msg, "child: ") { // errors of package child carry the prefix already
				msg = "child: " + msg
			}
			_, _ = fmt.Fprintln(stderr, msg)
		}
	}
	return code
}

// trimUsage drops the "usage: " prefix of a joined usage error.
func trimUsage(err error) string {
	s := err.Error()
	const p = "usage: "
	if len(s) > len(p) && s[:len(p)] == p {
		return s[len(p):]
	}
	return s
}

// serve runs the region's child (engine, RESP endpoint, channels, HTTP)
// until ctx ends.
func serve(ctx context.Context, cfg config, stderr io.Writer) error {
	log := zerolog.New(stderr).Level(cfg.LogLevel).With().Timestamp().
		Str("instance", cfg.Instance).Str("region", cfg.Region).Logger()
	redis.SetLogger(redisLogger{log.With().Str("component", "go-redis").Logger()})

	ropts := redis.Options{Addr: cfg.Redis, Password: cfg.RedisPassword, ClientName: "gr-child-" + cfg.Region}
	probe := redis.NewClient(&ropts)
	pctx, cancel := context.WithTimeout(ctx, redisConnectTimeout)
	err := probe.Ping(pctx).Err()
	cancel()
	_ = probe.Close()
	if err != nil {
		return fmt.Errorf("cannot reach redis-server at %s: %w", cfg.Redis, err)
	}
	d, err := daemon.Start(ctx, daemon.Config{
		Instance:      cfg.Instance,
		Region:        cfg.Region,
		Listen:        cfg.Listen,
		Password:      cfg.Password,
		MaxValueBytes: cfg.MaxValueBytes,
		Redis:         ropts,
		NATS:          cfg.NATS,
		Peers:         cfg.Peers,
		HTTP:          cfg.HTTP,
		Retention:     cfg.Retention,
		StreamBytes:   cfg.StreamBytes,
		Log:           log,
		Manager:       managerConfig(cfg),
	})
	if err != nil {
		return err
	}
	peers := make([]string, len(cfg.Peers))
	for i, p := range cfg.Peers {
		peers[i] = p.Region
	}
	log.Info().Str("listen", d.RESPAddr()).Str("redis", cfg.Redis).Str("http", d.HTTPAddr()).Str("nats", cfg.NATS.URL).
		Strs("peers", peers).Str("manager", cfg.Manager).Bool("auth", cfg.Password != "").Int("max_value_bytes", cfg.MaxValueBytes).
		Str("version", child.Version).Msg("child started")
	if err := d.Run(ctx); err != nil {
		return fmt.Errorf("serving: %w", err)
	}
	log.Info().Msg("child stopped")
	return nil
}

// managerConfig connects the daemon to the channel manager's config
// store, if one is set, with the region's NATS credentials.
func managerConfig(cfg config) daemon.ManagerConfig {
	if cfg.Manager == "" {
		return daemon.ManagerConfig{}
	}
	n := cfg.NATS
	n.URL = cfg.Manager
	return daemon.ManagerConfig{NATS: n, GCEvery: cfg.GCEvery}
}

// redisLogger routes go-redis's internal messages (dial failures, pool
// events) into the daemon's log.
type redisLogger struct{ log zerolog.Logger }

func (l redisLogger) Printf(_ context.Context, format string, v ...any) {
	l.log.Warn().Msgf(format, v...)
}
