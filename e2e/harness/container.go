package harness

import (
	"context"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
)

// Container is one running (or stopped) container of a test, with the
// controls fault tests need. Methods fail the test on error.
type Container struct {
	env   *Env
	tc    testcontainers.Container
	Name  string // Docker name, gr-e2e-<id>-<alias>
	Alias string // name on its networks, as given to Run
	ID    string
	Port  string // main port, "6379/tcp"

	aliases map[string][]string   // network name → aliases, restored by Connect
	ips     map[string]netip.Addr // network name → address before Disconnect, restored by Connect
	addrs   map[string]string     // container port ("6379/tcp") → "127.0.0.1:port"
	removed bool                  // Remove ran: nothing left to clean up
}

// Addr is the test's address of the main port: 127.0.0.1 and the host
// port published for it. It is fixed at creation and stays valid across
// restarts and partitions (while the container is stopped or attached to no
// network, nothing answers there). Safe to call from any goroutine.
func (c *Container) Addr() string { return c.addrs[c.Port] }

// MappedAddr is the test's address of another published container port
// ("8222/tcp"); empty if the port was not published.
func (c *Container) MappedAddr(port string) string {
	p, err := network.ParsePort(port)
	if err != nil {
		return ""
	}
	return c.addrs[p.String()]
}

// Networks returns the names of the networks the container is attached to,
// sorted, as the engine reports them.
func (c *Container) Networks() []string {
	c.env.t.Helper()
	ctx, cancel := c.env.ctx(CleanupTimeout)
	defer cancel()
	in, err := c.env.docker.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
	if err != nil {
		c.env.t.Fatalf("harness: inspect %s: %v", c.Alias, err)
	}
	var names []string
	if in.Container.NetworkSettings != nil {
		for name := range in.Container.NetworkSettings.Networks {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names
}

// IP returns the container's address on network n; invalid when it is
// not attached there.
func (c *Container) IP(n *Network) netip.Addr {
	c.env.t.Helper()
	ctx, cancel := c.env.ctx(CleanupTimeout)
	defer cancel()
	in, err := c.env.docker.ContainerInspect(ctx, c.ID, client.ContainerInspectOptions{})
	if err != nil {
		c.env.t.Fatalf("harness: inspect %s: %v", c.Alias, err)
	}
	if in.Container.NetworkSettings != nil {
		if ep := in.Container.NetworkSettings.Networks[n.Name]; ep != nil {
			return ep.IPAddress
		}
	}
	return netip.Addr{}
}

// Disconnect cuts the container off the network n (a partition): its
// address on n disappears and peers there can no longer resolve or reach
// it. Ports published through n stop working too.
func (c *Container) Disconnect(n *Network) {
	c.env.t.Helper()
	ctx, cancel := c.env.ctx(CleanupTimeout)
	defer cancel()
	if n.Subnet.IsValid() {
		if ip := c.IP(n); ip.IsValid() {
			c.ips[n.Name] = ip
		}
	}
	if _, err := c.env.docker.NetworkDisconnect(ctx, n.ID, client.NetworkDisconnectOptions{Container: c.ID}); err != nil {
		c.env.t.Fatalf("harness: disconnect %s from %s: %v", c.Alias, n.Name, err)
	}
	c.env.t.Logf("harness: %s disconnected from %s", c.Alias, n.Name)
}

// Connect attaches the container to n (heals a partition), with the
// aliases it had there, or its name if it was never on n. On a network
// with FixedAddresses it gets back the address it had before Disconnect.
func (c *Container) Connect(n *Network) {
	c.env.t.Helper()
	aliases, ok := c.aliases[n.Name]
	if !ok {
		aliases = []string{c.Alias}
		c.aliases[n.Name] = aliases
	}
	ep := &network.EndpointSettings{Aliases: aliases}
	if ip, ok := c.ips[n.Name]; ok && n.Subnet.IsValid() {
		ep.IPAMConfig = &network.EndpointIPAMConfig{IPv4Address: ip}
	}
	ctx, cancel := c.env.ctx(CleanupTimeout)
	defer cancel()
	if _, err := c.env.docker.NetworkConnect(ctx, n.ID, client.NetworkConnectOptions{
		Container:      c.ID,
		EndpointConfig: ep,
	}); err != nil {
		c.env.t.Fatalf("harness: connect %s to %s: %v", c.Alias, n.Name, err)
	}
	c.env.t.Logf("harness: %s connected to %s", c.Alias, n.Name)
}

// Stop stops the container gracefully: SIGTERM, then SIGKILL after
// timeout. Its file system (/data) is kept for Start.
func (c *Container) Stop(timeout time.Duration) {
	c.env.t.Helper()
	ctx, cancel := c.env.ctx(timeout + CleanupTimeout)
	defer cancel()
	if err := c.tc.Stop(ctx, &timeout); err != nil {
		c.env.t.Fatalf("harness: stop %s: %v", c.Alias, err)
	}
	c.env.t.Logf("harness: %s stopped", c.Alias)
}

// Kill sends SIGKILL (a crash: no shutdown code runs) and waits until the
// container is no longer running. Its file system is kept for Start.
func (c *Container) Kill() {
	c.env.t.Helper()
	ctx, cancel := c.env.ctx(CleanupTimeout)
	defer cancel()
	if _, err := c.env.docker.ContainerKill(ctx, c.ID, client.ContainerKillOptions{Signal: "KILL"}); err != nil {
		c.env.t.Fatalf("harness: kill %s: %v", c.Alias, err)
	}
	for c.Running() {
		select {
		case <-ctx.Done():
			c.env.t.Fatalf("harness: kill %s: still running after %s", c.Alias, CleanupTimeout)
		case <-time.After(50 * time.Millisecond):
		}
	}
	c.env.t.Logf("harness: %s killed", c.Alias)
}

// Start starts a stopped or killed container and waits until its wait
// strategy passes again.
func (c *Container) Start() {
	c.env.t.Helper()
	ctx, cancel := c.env.ctx(StartTimeout + 30*time.Second)
	defer cancel()
	start := time.Now()
	if err := c.tc.Start(ctx); err != nil {
		c.env.t.Logf("harness: %s output:\n%s", c.Alias, c.tail(logTail))
		c.env.t.Fatalf("harness: start %s: %v", c.Alias, err)
	}
	c.env.t.Logf("harness: %s started again in %s", c.Alias, time.Since(start).Round(time.Millisecond))
}

// Restart stops the container (SIGTERM, SIGKILL after timeout) and starts
// it again.
func (c *Container) Restart(timeout time.Duration) {
	c.env.t.Helper()
	c.Stop(timeout)
	c.Start()
}

// Pause freezes every process of the container (cgroup freezer): it keeps
// its connections but answers nothing, like a hung host.
func (c *Container) Pause() {
	c.env.t.Helper()
	ctx, cancel := c.env.ctx(CleanupTimeout)
	defer cancel()
	if _, err := c.env.docker.ContainerPause(ctx, c.ID, client.ContainerPauseOptions{}); err != nil {
		c.env.t.Fatalf("harness: pause %s: %v", c.Alias, err)
	}
}

// Unpause thaws a paused container.
func (c *Container) Unpause() {
	c.env.t.Helper()
	ctx, cancel := c.env.ctx(CleanupTimeout)
	defer cancel()
	if _, err := c.env.docker.ContainerUnpause(ctx, c.ID, client.ContainerUnpauseOptions{}); err != nil {
		c.env.t.Fatalf("harness: unpause %s: %v", c.Alias, err)
	}
}

// Remove removes the container now (SIGKILL, then its file system is
// gone): a lost machine. Start a new one with the same name to replace it;
// the end-of-test cleanup ignores a removed container.
func (c *Container) Remove() {
	c.env.t.Helper()
	ctx, cancel := c.env.ctx(CleanupTimeout)
	defer cancel()
	if err := c.tc.Terminate(ctx, testcontainers.StopTimeout(0)); err != nil && !cerrdefs.IsNotFound(err) {
		if _, err2 := c.env.docker.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err2 != nil && !cerrdefs.IsNotFound(err2) {
			c.env.t.Fatalf("harness: remove %s: %v; %v", c.Alias, err, err2)
		}
	}
	c.removed = true
	c.env.t.Logf("harness: %s removed", c.Alias)
}

// Running reports whether the container's process is running.
func (c *Container) Running() bool {
	c.env.t.Helper()
	ctx, cancel := c.env.ctx(CleanupTimeout)
	defer cancel()
	st, err := c.tc.State(ctx)
	if err != nil {
		c.env.t.Fatalf("harness: state of %s: %v", c.Alias, err)
	}
	return st.Running
}

// Logs returns the container's output so far (stdout and stderr).
func (c *Container) Logs() string {
	c.env.t.Helper()
	ctx, cancel := c.env.ctx(CleanupTimeout)
	defer cancel()
	s, err := c.logs(ctx)
	if err != nil {
		c.env.t.Fatalf("harness: logs of %s: %v", c.Alias, err)
	}
	return s
}

func (c *Container) logs(ctx context.Context) (string, error) {
	rc, err := c.tc.Logs(ctx)
	if err != nil {
		return "", err
	}
	defer func() { _ = rc.Close() }()
	b, err := io.ReadAll(rc)
	return string(b), err
}

// tail returns the last n lines of output, never failing (for diagnostics).
func (c *Container) tail(n int) string {
	ctx, cancel := context.WithTimeout(context.Background(), CleanupTimeout)
	defer cancel()
	s, err := c.logs(ctx)
	if err != nil {
		return "(no logs: " + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "  | " + strings.Join(lines, "\n  | ")
}

// cleanup removes the container at the end of the test, logging the tail
// of its output first when the test failed.
func (c *Container) cleanup() {
	t := c.env.owner
	if c.removed {
		return
	}
	if t.Failed() {
		t.Logf("harness: last output of %s (%s):\n%s", c.Alias, c.Name, c.tail(logTail))
	}
	ctx, cancel := context.WithTimeout(context.Background(), CleanupTimeout)
	defer cancel()
	err := c.tc.Terminate(ctx, testcontainers.StopTimeout(0))
	if err == nil || cerrdefs.IsNotFound(err) {
		return
	}
	// Terminate stops before removing; a forced remove needs neither.
	if _, err2 := c.env.docker.ContainerRemove(ctx, c.ID, client.ContainerRemoveOptions{Force: true, RemoveVolumes: true}); err2 != nil && !cerrdefs.IsNotFound(err2) {
		t.Errorf("harness: cleanup of %s: %v; %v", c.Alias, err, err2)
	}
}
