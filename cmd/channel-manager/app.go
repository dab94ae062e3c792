package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"
	"github.com/spf13/cobra"

	"github.com/globalreplica/globalreplica/manager"
)

// Defaults of the global flags.
const (
	defaultNATS     = "nats://127.0.0.1:4222"
	defaultLogLevel = "warn"
	connectTimeout  = 5 * time.Second
)

// globals are the global flags, after the environment filled the ones not
// given.
type globals struct {
	nats, user, password, token, creds string
	instance                           string
	json                               bool
	logLevel                           string
	lockTTL                            time.Duration
}

// globalFlag is a global flag and its environment variable.
type globalFlag struct {
	name, env, def, usage string
	dst                   *string
}

// app is what every subcommand shares: the global flags, the output
// streams and the connection to the config store (opened on first use).
type app struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	g              globals
	flags          []globalFlag
	log            zerolog.Logger
	holder         string // lock holder id of this process

	nc *nats.Conn
	js jetstream.JetStream
}

func newApp(stdout, stderr io.Writer, getenv func(string) string) *app {
	host, _ := os.Hostname()
	a := &app{
		stdout: stdout, stderr: stderr, getenv: getenv,
		log:    zerolog.Nop(),
		holder: fmt.Sprintf("channel-manager@%s/%d/%s", host, os.Getpid(), uuid.NewString()[:8]),
	}
	a.flags = []globalFlag{
		{"nats", "GR_MANAGER_NATS", defaultNATS, "NATS URL(s) of the config store (comma-separated for a cluster)", &a.g.nats},
		{"nats-user", "GR_NATS_USER", "", "NATS user", &a.g.user},
		{"nats-password", "GR_NATS_PASSWORD", "", "NATS password; prefer the environment to a flag, which ps shows", &a.g.password},
		{"nats-token", "GR_NATS_TOKEN", "", "NATS token instead of user and password", &a.g.token},
		{"nats-creds", "GR_NATS_CREDS", "", "NATS credentials file (JWT and NKey) instead of user, password or token", &a.g.creds},
		{"instance", "GR_INSTANCE", "", "name of the global instance", &a.g.instance},
		{"log-level", "GR_LOG_LEVEL", defaultLogLevel, "log level on stderr: debug, info, warn, error or disabled", &a.g.logLevel},
	}
	return a
}

func (a *app) addGlobalFlags(root *cobra.Command) {
	fs := root.PersistentFlags()
	for _, f := range a.flags {
		fs.StringVar(f.dst, f.name, f.def, f.usage+" [$"+f.env+"]")
	}
	fs.BoolVar(&a.g.json, "json", false, "print JSON (stable field names) instead of tables")
	fs.DurationVar(&a.g.lockTTL, "lock-ttl", manager.DefaultLockTTL, "how long the manager lock outlives a manager that died while holding it")
	fs.SortFlags = false
}

// resolve fills the global flags that were not given from the
// environment and sets up logging.
func (a *app) resolve(cmd *cobra.Command) error {
	for _, f := range a.flags {
		if fl := cmd.Flags().Lookup(f.name); fl != nil && fl.Changed {
			continue
		}
		if v := a.getenv(f.env); v != "" {
			*f.dst = v
		}
	}
	lvl, err := zerolog.ParseLevel(strings.ToLower(a.g.logLevel))
	if err != nil || a.g.logLevel == "" {
		return usageErr("unknown log level %q", a.g.logLevel)
	}
	if a.g.lockTTL < time.Second {
		return usageErr("--lock-ttl %s: at least 1s", a.g.lockTTL)
	}
	a.log = zerolog.New(zerolog.ConsoleWriter{Out: a.stderr, NoColor: true, TimeFormat: time.TimeOnly}).
		Level(lvl).With().Timestamp().Logger()
	return nil
}

// jetStream connects to the config store's NATS.
func (a *app) jetStream() (jetstream.JetStream, error) {
	if a.js != nil {
		return a.js, nil
	}
	opts := []nats.Option{nats.Name("channel-manager"), nats.Timeout(connectTimeout)}
	switch {
	case a.g.creds != "":
		opts = append(opts, nats.UserCredentials(a.g.creds))
	case a.g.token != "":
		opts = append(opts, nats.Token(a.g.token))
	case a.g.user != "":
		opts = append(opts, nats.UserInfo(a.g.user, a.g.password))
	}
	nc, err := nats.Connect(a.g.nats, opts...)
	if err != nil {
		return nil, fmt.Errorf("channel-manager: cannot reach the config store at %s (--nats or $GR_MANAGER_NATS): %w", a.g.nats, err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		return nil, err
	}
	a.nc, a.js = nc, js
	return js, nil
}

// instanceName returns the instance named by --instance or $GR_INSTANCE.
func (a *app) instanceName() (string, error) {
	if a.g.instance == "" {
		return "", usageErr("the instance is required: --instance or $GR_INSTANCE")
	}
	return a.g.instance, nil
}

// store binds the store of an existing instance.
func (a *app) store(ctx context.Context) (*manager.Store, error) {
	name, err := a.instanceName()
	if err != nil {
		return nil, err
	}
	js, err := a.jetStream()
	if err != nil {
		return nil, err
	}
	return manager.Bind(ctx, js, name, manager.WithLogger(a.log))
}

// purpose describes the running command for the lock: "region add fra".
func purpose(cmd *cobra.Command, args []string) string {
	path := strings.TrimPrefix(cmd.CommandPath(), cmd.Root().Name()+" ")
	return strings.TrimSpace(path + " " + strings.Join(args, " "))
}

// mutate runs f under the manager lock of the instance.
func (a *app) mutate(cmd *cobra.Command, args []string, f func(ctx context.Context, s *manager.Store) error) error {
	return a.mutateLock(cmd, args, func(ctx context.Context, s *manager.Store, _ *manager.Lock) error { return f(ctx, s) })
}

// mutateLock runs f under the manager lock of the instance and hands it
// the lock, for long operations that stop when l.Lost() is closed.
func (a *app) mutateLock(cmd *cobra.Command, args []string, f func(ctx context.Context, s *manager.Store, l *manager.Lock) error) error {
	ctx := cmd.Context()
	s, err := a.store(ctx)
	if err != nil {
		return err
	}
	return a.locked(cmd, args, s, f)
}

// locked runs f on s under the manager lock.
func (a *app) locked(cmd *cobra.Command, args []string, s *manager.Store, f func(ctx context.Context, s *manager.Store, l *manager.Lock) error) error {
	ctx := cmd.Context()
	l, err := s.Lock(ctx, a.holder, purpose(cmd, args), a.g.lockTTL)
	if err != nil {
		return err
	}
	ferr := f(ctx, s, l)
	// Release even when ctx ended (Ctrl-C): others should not wait for the TTL.
	rctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), connectTimeout)
	defer cancel()
	rerr := l.Release(rctx)
	if ferr != nil {
		return ferr
	}
	if rerr != nil && errors.Is(rerr, manager.ErrLockLost) {
		return rerr
	}
	if rerr != nil {
		a.log.Warn().Err(rerr).Msg("releasing the manager lock failed; it expires by itself")
	}
	return nil
}

// close closes the connection to the config store.
func (a *app) close() {
	if a.nc != nil {
		a.nc.Close()
	}
}
