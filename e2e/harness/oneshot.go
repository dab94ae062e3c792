package harness

import (
	"context"
	"fmt"
	"strconv"
	"sync/atomic"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/globalreplica/globalreplica/e2e/images"
)

// OnceTimeout is the default bound of RunOnce: container start, the
// command, and reading its output.
const OnceTimeout = 2 * time.Minute

var onceSeq atomic.Uint64

// RunOnce runs a container to completion on the given networks and returns
// its exit code and output (stdout and stderr). The container is removed
// before RunOnce returns. spec.Port and spec.Wait are ignored: nothing is
// published. It fails the test only when the container cannot be run; a
// non-zero exit code is the caller's to judge. timeout 0 means OnceTimeout.
func (e *Env) RunOnce(name string, spec ContainerSpec, timeout time.Duration, nets ...*Network) (exitCode int, output string) {
	e.t.Helper()
	if timeout <= 0 {
		timeout = OnceTimeout
	}
	full := e.dockerName(name) + "-" + strconv.FormatUint(onceSeq.Add(1), 10)
	req := testcontainers.ContainerRequest{
		Image:      spec.Image,
		Name:       full,
		Cmd:        spec.Cmd,
		Env:        spec.Env,
		Labels:     e.labels(),
		WaitingFor: wait.ForExit().WithExitTimeout(timeout),
	}
	if len(nets) > 0 {
		req.NetworkAliases = map[string][]string{}
		for _, n := range nets {
			req.Networks = append(req.Networks, n.Name)
			req.NetworkAliases[n.Name] = []string{name}
		}
	}
	ctx, cancel := e.ctx(timeout + 30*time.Second)
	defer cancel()
	tc, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
		ContainerRequest: req,
		Started:          true,
		Logger:           tclog.TestLogger(e.owner),
	})
	if tc != nil {
		defer func() {
			ctx, cancel := context.WithTimeout(context.Background(), CleanupTimeout)
			defer cancel()
			if err := tc.Terminate(ctx, testcontainers.StopTimeout(0)); err != nil && !cerrdefs.IsNotFound(err) {
				_, _ = e.docker.ContainerRemove(ctx, tc.GetContainerID(), client.ContainerRemoveOptions{Force: true, RemoveVolumes: true})
			}
		}()
	}
	if err != nil {
		e.t.Fatalf("harness: run %s (%s) %v: %v", name, spec.Image, spec.Cmd, err)
	}
	st, err := tc.State(ctx)
	if err != nil {
		e.t.Fatalf("harness: state of %s: %v", name, err)
	}
	if st.Running {
		e.t.Fatalf("harness: %s %v still running after %s", name, spec.Cmd, timeout)
	}
	c := &Container{env: e, tc: tc}
	out, err := c.logs(ctx)
	if err != nil {
		e.t.Fatalf("harness: output of %s: %v", name, err)
	}
	return st.ExitCode, out
}

// ForRunning waits until the container's process has been running for d,
// for programs that publish no port and print nothing when they are up (a
// control loop); it fails at once when the process exits.
func ForRunning(d time.Duration) wait.Strategy { return &runningStrategy{d: d} }

type runningStrategy struct{ d time.Duration }

var _ wait.Strategy = (*runningStrategy)(nil)

func (s *runningStrategy) String() string { return fmt.Sprintf("running for %s", s.d) }

func (s *runningStrategy) WaitUntilReady(ctx context.Context, target wait.StrategyTarget) error {
	var since time.Time
	for {
		st, err := target.State(ctx)
		switch {
		case err != nil:
			return fmt.Errorf("%s: %w", s, err)
		case st.Running && since.IsZero():
			since = time.Now()
		case !st.Running && st.Status != "created":
			return fmt.Errorf("%s: container is %s (exit code %d)", s, st.Status, st.ExitCode)
		}
		if !since.IsZero() && time.Since(since) >= s.d {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: %w", s, ctx.Err())
		case <-time.After(pollInterval):
		}
	}
}

// Manager starts a long-running channel-manager (gr-manager:e2e) with args,
// for `run` (the control loop), on nets. It publishes no port; it is ready
// once its process has been running for a second.
func (e *Env) Manager(name string, args []string, nets ...*Network) *Container {
	e.t.Helper()
	return e.Run(name, ContainerSpec{
		Image: Image(e.t, images.Manager()),
		Cmd:   args,
		Wait:  ForRunning(time.Second),
	}, nets...)
}

// ManagerCLI runs one channel-manager command (gr-manager:e2e) to completion
// on nets and returns its exit code and output; see RunOnce.
func (e *Env) ManagerCLI(timeout time.Duration, args []string, nets ...*Network) (exitCode int, output string) {
	e.t.Helper()
	return e.RunOnce("cli", ContainerSpec{Image: Image(e.t, images.Manager()), Cmd: args}, timeout, nets...)
}
