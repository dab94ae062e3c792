package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/spf13/cobra"

	"github.com/globalreplica/globalreplica/internal/testnats"
	"github.com/globalreplica/globalreplica/manager"
)

// cli runs the channel-manager against a config store.
type cli struct {
	t   *testing.T
	env map[string]string
}

// newCLI starts a NATS server for the config store and returns a runner
// whose environment points at it, for instance "shop".
func newCLI(t *testing.T) (*cli, *testnats.Server) {
	t.Helper()
	srv := testnats.StartAuth(t, "mgr", "gr", "secret")
	return &cli{t: t, env: map[string]string{
		"GR_MANAGER_NATS": srv.URL(), "GR_NATS_USER": "gr", "GR_NATS_PASSWORD": "secret", "GR_INSTANCE": "shop",
	}}, srv
}

// run runs the CLI and returns its output and exit code.
func (c *cli) run(args ...string) (stdout, stderr string, code int) {
	c.t.Helper()
	var out, errOut bytes.Buffer
	code = run(context.Background(), args, &out, &errOut, func(k string) string { return c.env[k] })
	return out.String(), errOut.String(), code
}

// ok runs the CLI and fails the test unless it exits with 0.
func (c *cli) ok(args ...string) string {
	c.t.Helper()
	out, errOut, code := c.run(args...)
	if code != exitOK {
		c.t.Fatalf("channel-manager %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, out, errOut)
	}
	return out
}

// fails runs the CLI and fails the test unless it exits with code and
// says want on stderr.
func (c *cli) fails(code int, want string, args ...string) {
	c.t.Helper()
	out, errOut, got := c.run(args...)
	if got != code || !strings.Contains(errOut, want) {
		c.t.Fatalf("channel-manager %s: exit %d, want %d with %q\nstdout: %s\nstderr: %s", strings.Join(args, " "), got, code, want, out, errOut)
	}
}

// json runs the CLI with --json and decodes its output into v.
func (c *cli) json(v any, args ...string) {
	c.t.Helper()
	out := c.ok(append(args, "--json")...)
	dec := json.NewDecoder(strings.NewReader(out))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		c.t.Fatalf("channel-manager %s --json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// TestHelp: every command answers --help with its usage and exit code 0.
func TestHelp(t *testing.T) {
	var walk func(cmd *cobra.Command, path []string)
	n := 0
	walk = func(cmd *cobra.Command, path []string) {
		for _, sub := range cmd.Commands() {
			if sub.Hidden || sub.Name() == "help" || sub.Name() == "completion" {
				continue
			}
			p := append(append([]string(nil), path...), sub.Name())
			var out, errOut bytes.Buffer
			code := run(context.Background(), append(p, "--help"), &out, &errOut, func(string) string { return "" })
			if code != exitOK || !strings.Contains(out.String(), "Usage:") || !strings.Contains(out.String(), "--json") {
				t.Errorf("%s --help: exit %d\n%s%s", strings.Join(p, " "), code, out.String(), errOut.String())
			}
			n++
			walk(sub, p)
		}
	}
	walk(newRoot(newApp(nil, nil, nil)), nil)
	if n < 17 { // 3 groups, 3 instance, 4 region, 7 channel commands
		t.Fatalf("walked %d commands", n)
	}
}

// TestUsageErrors: bad flags and arguments exit with 2 before touching
// the config store (none runs here).
func TestUsageErrors(t *testing.T) {
	env := map[string]string{"GR_MANAGER_NATS": "nats://127.0.0.1:1", "GR_INSTANCE": "shop"}
	c := &cli{t: t, env: env}
	c.fails(exitUsage, `unknown command "nope"`, "nope")
	c.fails(exitUsage, `unknown command "nope"`, "region", "nope")
	c.fails(exitUsage, "unknown flag", "region", "list", "--bogus")
	c.fails(exitUsage, "wants 2 argument(s)", "channel", "pause", "sgp")
	c.fails(exitUsage, "to itself", "channel", "pause", "sgp", "sgp")
	c.fails(exitUsage, "region id", "channel", "create", "sgp", "Bad_Region")
	c.fails(exitUsage, "region id", "region", "add", "UPPER", "--region-nats", "n", "--redis", "r")
	c.fails(exitUsage, "needs --region-nats", "region", "add", "fra", "--redis", "r")
	c.fails(exitUsage, "needs --ops and/or --bytes", "channel", "throttle", "sgp", "fra")
	c.fails(exitUsage, "must be >= 0", "channel", "throttle", "sgp", "fra", "--ops", "-1")
	c.fails(exitUsage, "--retention", "instance", "create", "--retention", "0s")
	c.fails(exitUsage, "names instance", "instance", "create", "other")
	c.fails(exitUsage, "log level", "region", "list", "--log-level", "loud")
	delete(env, "GR_INSTANCE")
	c.fails(exitUsage, "the instance is required", "region", "list")
	// A store that cannot be reached is a failure, not a usage error.
	env["GR_INSTANCE"] = "shop"
	c.fails(exitFailure, "cannot reach the config store", "region", "list")
}

func TestExitCodes(t *testing.T) {
	for _, tc := range []struct {
		err  error
		code int
	}{
		{nil, exitOK},
		{usageErr("x"), exitUsage},
		{manager.ErrInvalid, exitUsage},
		{manager.ErrChannelToItself, exitUsage},
		{manager.ErrNoRegion, exitNotFound},
		{manager.ErrNoChannel, exitNotFound},
		{manager.ErrNoInstance, exitNotFound},
		{manager.ErrBusy, exitBusy},
		{errDiffers, exitDiffers},
		{manager.ErrRegionExists, exitFailure},
		{exitWith(7, manager.ErrBusy), 7},
	} {
		if got := exitCode(tc.err); got != tc.code {
			t.Errorf("exitCode(%v) = %d, want %d", tc.err, got, tc.code)
		}
	}
}

// TestRegistry: a command registered under a group lands there.
func TestRegistry(t *testing.T) {
	saved := registry
	t.Cleanup(func() { registry = saved })
	registerUnder("channel", func(*app) *cobra.Command {
		return &cobra.Command{Use: "extra", RunE: func(cmd *cobra.Command, _ []string) error {
			_, err := cmd.OutOrStdout().Write([]byte("extra ran\n"))
			return err
		}}
	})
	register(func(*app) *cobra.Command {
		return &cobra.Command{Use: "test-differs", RunE: func(*cobra.Command, []string) error { return errDiffers }}
	})
	c := &cli{t: t, env: map[string]string{}}
	if out := c.ok("channel", "extra"); out != "extra ran\n" {
		t.Fatalf("channel extra: %q", out)
	}
	c.fails(exitDiffers, "regions differ", "test-differs")
}
