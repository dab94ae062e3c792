// Command channel-manager is the operator's tool of a Global Replica
// instance: it keeps the desired state (the instance, its regions, the
// channels between them and their controls) in a NATS KV bucket that the
// children of every region watch, and shows what the children report.
//
// Run `channel-manager --help`, and `--help` on any subcommand.
//
// # Structure
//
// main parses and exits; everything else is a function of an *app (the
// global flags, the streams and the connection to the config store), so
// that tests run the whole CLI with run(ctx, args, stdout, stderr, getenv).
// The logic lives in package manager; the files here only turn flags into
// calls and results into tables or JSON (output.go).
//
// # Adding a subcommand
//
// Each subcommand (or group) lives in its own file and registers its
// constructor from an init function; the root adds every registered
// command, sorted by name:
//
//	func init() { register(newVerifyCommand) }
//
//	func newVerifyCommand(a *app) *cobra.Command {
//		return &cobra.Command{
//			Use:   "verify",
//			Short: "Compare the user-visible state of every region",
//			Args:  noArgs,
//			RunE: func(cmd *cobra.Command, _ []string) error {
//				s, err := a.store(cmd.Context()) // read-only access
//				...
//				return a.print(result, func(w io.Writer) error { ... }) // --json or a table
//			},
//		}
//	}
//
// A command that changes the desired state runs its change under the
// manager lock: a.mutate(cmd, func(ctx, s) error {...}) takes the lock for
// the whole operation (ErrBusy, exit code 4, when another manager holds
// it) and releases it after. Long operations watch lock.Lost() (a.mutateLock).
//
// Exit codes come from the returned error (exitCode): errUsage or
// manager.ErrInvalid or manager.ErrChannelToItself give 2, manager.ErrNoInstance/ErrNoRegion/ErrNoChannel
// give 3, manager.ErrBusy 4, errDiffers 5; exitWith(code, err) sets any
// other. Subgroups under an existing group (`channel foo`) register with
// registerUnder("channel", newFooCommand).
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"sort"
	"strings"
	"syscall"

	"github.com/spf13/cobra"

	"github.com/globalreplica/globalreplica/child"
	"github.com/globalreplica/globalreplica/manager"
)

// Exit codes, shared by every subcommand.
const (
	exitOK       = 0
	exitFailure  = 1 // the operation failed
	exitUsage    = 2 // bad flags, arguments or input; nothing was changed
	exitNotFound = 3 // no such instance, region or channel; nothing was changed
	exitBusy     = 4 // another manager holds the lock; nothing was changed
	exitDiffers  = 5 // verify: the regions differ
)

var (
	// errUsage marks bad flags and arguments: exit code 2.
	errUsage = errors.New("usage")
	// errDiffers marks a verification that found differences: exit code 5.
	errDiffers = errors.New("channel-manager: the regions differ")
)

// exitError carries an explicit exit code.
type exitError struct {
	code int
	err  error
}

func (e *exitError) Error() string { return e.err.Error() }
func (e *exitError) Unwrap() error { return e.err }

// exitWith returns err with an explicit exit code.
func exitWith(code int, err error) error { return &exitError{code: code, err: err} }

// usageErr returns a usage error (exit code 2).
func usageErr(format string, args ...any) error {
	return fmt.Errorf("%w: %s", errUsage, fmt.Sprintf(format, args...))
}

// exitCode maps an error to the process's exit code.
func exitCode(err error) int {
	var ee *exitError
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ee):
		return ee.code
	case errors.Is(err, errUsage), errors.Is(err, manager.ErrInvalid), errors.Is(err, manager.ErrChannelToItself):
		return exitUsage
	case errors.Is(err, manager.ErrNoInstance), errors.Is(err, manager.ErrNoRegion), errors.Is(err, manager.ErrNoChannel):
		return exitNotFound
	case errors.Is(err, manager.ErrBusy):
		return exitBusy
	case errors.Is(err, errDiffers):
		return exitDiffers
	default:
		return exitFailure
	}
}

// A constructor builds one subcommand for an app.
type constructor func(*app) *cobra.Command

type registration struct {
	parent string // "" for the root
	new    constructor
}

// registry holds the subcommands registered by init functions. It is
// written only during package initialisation.
var registry []registration

// register adds a top-level subcommand; call it from an init function.
func register(c constructor) { registry = append(registry, registration{new: c}) }

// registerUnder adds a subcommand to the group named parent (a top-level
// command registered elsewhere); call it from an init function.
func registerUnder(parent string, c constructor) {
	registry = append(registry, registration{parent: parent, new: c})
}

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr, os.Getenv)
	stop()
	os.Exit(code)
}

// run is the whole CLI; it returns the exit code.
func run(ctx context.Context, args []string, stdout, stderr io.Writer, getenv func(string) string) int {
	a := newApp(stdout, stderr, getenv)
	defer a.close()
	root := newRoot(a)
	root.SetArgs(args)
	err := root.ExecuteContext(ctx)
	if err != nil && strings.HasPrefix(err.Error(), "unknown command") {
		err = fmt.Errorf("%w: %w", errUsage, err)
	}
	code := exitCode(err)
	if err != nil {
		msg := strings.TrimPrefix(err.Error(), "usage: ")
		if !strings.HasPrefix(msg, "manager: ") && !strings.HasPrefix(msg, "channel-manager: ") {
			msg = "channel-manager: " + msg
		}
		_, _ = fmt.Fprintln(stderr, msg)
		if code == exitUsage {
			_, _ = fmt.Fprintln(stderr, "Run 'channel-manager --help' (or --help on the subcommand) for usage.")
		}
	}
	return code
}

// newRoot builds the command tree for a.
func newRoot(a *app) *cobra.Command {
	root := &cobra.Command{
		Use:   "channel-manager",
		Short: "Manage a Global Replica instance: its regions, channels and children",
		Long: `channel-manager manages a Global Replica instance. The desired state (the
instance, its regions, the channels between them and their controls) lives in
NATS KV buckets that the children of every region watch: a change made here
reaches the running children within a moment, without restarts. Children
report back with heartbeats, which 'channel status' joins with the desired
state.

The config store is reached through --nats (or $GR_MANAGER_NATS), with the
NATS credentials when configured; the instance is named with --instance (or
$GR_INSTANCE). Commands that change the desired state take the manager lock
for their duration, so two managers acting at once cannot interleave: the
second one fails with exit code 4 and changes nothing.

Read commands print tables; --json prints JSON with stable field names.

Exit codes:
  0  ok
  1  the operation failed
  2  bad flags, arguments or input (nothing changed)
  3  no such instance, region or channel (nothing changed)
  4  another manager holds the lock (nothing changed)
  5  verify found differences between regions`,
		Version:           child.Version,
		SilenceUsage:      true,
		SilenceErrors:     true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error { return a.resolve(cmd) },
	}
	g := group("", "", "")
	root.Args, root.RunE = g.Args, g.RunE
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return fmt.Errorf("%w: %w", errUsage, err) })
	a.addGlobalFlags(root)

	regs := append([]registration(nil), registry...)
	sort.SliceStable(regs, func(i, j int) bool { return regs[i].parent == "" && regs[j].parent != "" })
	groups := map[string]*cobra.Command{}
	for _, r := range regs {
		cmd := r.new(a)
		if r.parent == "" {
			root.AddCommand(cmd)
			groups[cmd.Name()] = cmd
			continue
		}
		parent, ok := groups[r.parent]
		if !ok { // a programming error, reported as a failure rather than a panic
			root.AddCommand(&cobra.Command{Use: cmd.Name(), Hidden: true, RunE: func(*cobra.Command, []string) error {
				return fmt.Errorf("channel-manager: command %s is registered under unknown group %q", cmd.Name(), r.parent)
			}})
			continue
		}
		parent.AddCommand(cmd)
	}
	return root
}

// noArgs refuses arguments with a usage error.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageErr("%s takes no arguments (got %q)", cmd.CommandPath(), args[0])
	}
	return nil
}

// exactArgs wants one argument per name.
func exactArgs(names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != len(names) {
			return usageErr("%s wants %d argument(s): %s (got %d)", cmd.CommandPath(), len(names), strings.Join(names, " "), len(args))
		}
		return nil
	}
}

// group returns a command that only holds subcommands: alone it prints its
// help, with an unknown subcommand it is a usage error.
func group(use, short, long string) *cobra.Command {
	return &cobra.Command{
		Use:   use,
		Short: short,
		Long:  long,
		Args:  cobra.ArbitraryArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			if len(args) > 0 {
				return usageErr("unknown command %q for %q", args[0], cmd.CommandPath())
			}
			return cmd.Help()
		},
	}
}
