package harness

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
)

// Labels on every container and network the harness creates.
const (
	LabelSuite = "globalreplica.e2e"      // "1": created by the e2e suite; the sweep looks only at these
	LabelHost  = "globalreplica.e2e.host" // hostname of the test process
	LabelPID   = "globalreplica.e2e.pid"  // pid of the test process
	LabelTest  = "globalreplica.e2e.test" // t.Name() of the test that created it
)

// Environment variables read by the harness.
const (
	// EnvRyukDisabled is testcontainers' switch for its reaper container;
	// Main sets it to "true" (the Taskfile does too).
	EnvRyukDisabled = "TESTCONTAINERS_RYUK_DISABLED"
	// EnvHostOverride is testcontainers' address of published ports; Main
	// sets it to 127.0.0.1, where the harness publishes them. (Left to
	// itself, testcontainers picks the default gateway when it finds
	// /.dockerenv, that is when the tests run inside a container.)
	EnvHostOverride = "TESTCONTAINERS_HOST_OVERRIDE"
	// EnvRedisImage, when set, is used instead of building gr-redis:e2e
	// (for example "redis:7.2" where a registry is reachable).
	EnvRedisImage = "GR_E2E_REDIS_IMAGE"
	// EnvNATSImage, when set, is used instead of building gr-nats:e2e
	// (for example "nats:2.12").
	EnvNATSImage = "GR_E2E_NATS_IMAGE"
	// EnvSweepAll=1 makes the sweep at start remove every resource labelled
	// by the suite, also those of test processes that are still running.
	EnvSweepAll = "GR_E2E_SWEEP_ALL"
)

// StaleAfter is the age after which the sweep removes a labelled resource
// even when it cannot tell whether its test process is still alive (another
// host, missing labels).
const StaleAfter = 6 * time.Hour

// ErrDocker wraps every failure to reach or use the Docker engine.
var ErrDocker = errors.New("harness: docker")

var (
	dockerOnce sync.Once
	dockerCli  *client.Client
	dockerErr  error

	hostname, _ = os.Hostname()
	pid         = os.Getpid()
)

// Main prepares the process for the suite, runs the tests and returns the
// exit code for os.Exit. It must be called from TestMain, before anything
// touches testcontainers:
//
//   - sets TESTCONTAINERS_RYUK_DISABLED=true (no reaper image can be pulled;
//     the harness cleans up itself) and TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1
//     (ports are published on the loopback interface only);
//   - connects to Docker and sweeps leftovers of earlier runs (see Sweep).
//     When Docker is unreachable the tests still run and each one fails
//     with the connection error: the suite never skips.
func Main(m *testing.M) int {
	_ = os.Setenv(EnvRyukDisabled, "true")
	_ = os.Setenv(EnvHostOverride, LocalHost.String())

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	if cli, err := dockerClient(ctx); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: %v (every test will fail)\n", err)
	} else {
		c, n, err := Sweep(ctx, cli, os.Getenv(EnvSweepAll) == "1")
		switch {
		case err != nil:
			fmt.Fprintf(os.Stderr, "e2e: sweep of leftovers: %v\n", err)
		case c+n > 0:
			fmt.Fprintf(os.Stderr, "e2e: removed %d leftover containers and %d networks of earlier runs\n", c, n)
		}
	}
	cancel()

	code := m.Run()

	// t.Cleanup removed everything already; this catches what a panicking
	// or aborted helper may have left behind.
	if dockerCli != nil {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		if c, n, err := sweep(ctx, dockerCli, func(labels map[string]string, _ time.Time) bool {
			return labels[LabelHost] == hostname && labels[LabelPID] == strconv.Itoa(pid)
		}); err != nil || c+n > 0 {
			fmt.Fprintf(os.Stderr, "e2e: final sweep removed %d containers and %d networks (err: %v)\n", c, n, err)
		}
		cancel()
		_ = dockerCli.Close()
	}
	return code
}

// dockerClient returns the process's Docker client, connecting once. It
// uses testcontainers' discovery of the engine (DOCKER_HOST,
// ~/.testcontainers.properties, the default socket).
func dockerClient(ctx context.Context) (*client.Client, error) {
	dockerOnce.Do(func() {
		if os.Getenv(EnvRyukDisabled) != "true" {
			dockerErr = fmt.Errorf("%w: %s is not \"true\": call harness.Main from TestMain", ErrDocker, EnvRyukDisabled)
			return
		}
		cli, err := testcontainers.NewDockerClientWithOpts(ctx)
		if err != nil {
			host := os.Getenv("DOCKER_HOST")
			if host == "" {
				host = "unset, default unix:///var/run/docker.sock"
			}
			dockerErr = fmt.Errorf("%w: engine not reachable (DOCKER_HOST %s; is the daemon running and the socket readable?): %w", ErrDocker, host, err)
			return
		}
		dockerCli = cli.Client
	})
	return dockerCli, dockerErr
}

// Sweep removes containers and networks labelled by the suite that belong
// to no running test process: those of this host whose pid is gone, and any
// older than StaleAfter. With all, it removes every labelled resource. It
// returns how many containers and networks it removed.
func Sweep(ctx context.Context, cli *client.Client, all bool) (containers, networks int, err error) {
	now := time.Now()
	return sweep(ctx, cli, func(labels map[string]string, created time.Time) bool {
		if all || now.Sub(created) > StaleAfter {
			return true
		}
		p, err := strconv.Atoi(labels[LabelPID])
		if err != nil || labels[LabelHost] == "" {
			return false // unknown owner: wait for StaleAfter
		}
		return labels[LabelHost] == hostname && !processAlive(p)
	})
}

func sweep(ctx context.Context, cli *client.Client, remove func(labels map[string]string, created time.Time) bool) (int, int, error) {
	filter := client.Filters{}.Add("label", LabelSuite+"=1")
	var errs []error
	nc := 0
	cs, err := cli.ContainerList(ctx, client.ContainerListOptions{All: true, Filters: filter})
	if err != nil {
		return 0, 0, fmt.Errorf("%w: list containers: %w", ErrDocker, err)
	}
	for _, c := range cs.Items {
		if !remove(c.Labels, time.Unix(c.Created, 0)) {
			continue
		}
		if _, err := cli.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err != nil {
			errs = append(errs, fmt.Errorf("remove container %.12s: %w", c.ID, err))
			continue
		}
		nc++
	}
	nn := 0
	ns, err := cli.NetworkList(ctx, client.NetworkListOptions{Filters: filter})
	if err != nil {
		return nc, 0, fmt.Errorf("%w: list networks: %w", ErrDocker, err)
	}
	for _, n := range ns.Items {
		if !remove(n.Labels, n.Created) {
			continue
		}
		if err := removeNetwork(ctx, cli, n.ID); err != nil {
			errs = append(errs, err)
			continue
		}
		nn++
	}
	return nc, nn, errors.Join(errs...)
}

// removeNetwork disconnects whatever is still attached to the network and
// removes it.
func removeNetwork(ctx context.Context, cli *client.Client, id string) error {
	if in, err := cli.NetworkInspect(ctx, id, client.NetworkInspectOptions{}); err == nil {
		for cid := range in.Network.Containers {
			_, _ = cli.NetworkDisconnect(ctx, id, client.NetworkDisconnectOptions{Container: cid, Force: true})
		}
	}
	var err error
	for range 5 {
		if _, err = cli.NetworkRemove(ctx, id, client.NetworkRemoveOptions{}); err == nil || cerrdefs.IsNotFound(err) {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("remove network %.12s: %w", id, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
	return fmt.Errorf("remove network %.12s: %w", id, err)
}

func processAlive(p int) bool {
	if p <= 0 {
		return false
	}
	err := syscall.Kill(p, 0)
	return err == nil || errors.Is(err, syscall.EPERM)
}
