package harness

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/api/types/container"
	"github.com/moby/moby/api/types/network"
	"github.com/moby/moby/client"
	"github.com/testcontainers/testcontainers-go"
	tclog "github.com/testcontainers/testcontainers-go/log"
	"github.com/testcontainers/testcontainers-go/wait"

	"github.com/globalreplica/globalreplica/e2e/images"
)

// Ports of the suite's containers, as Container.MappedAddr takes them.
const (
	RedisPort          = images.RedisPort
	NATSPort           = images.NATSPort
	NATSMonitoringPort = images.NATSMonitoring
	ChildPort          = images.ChildPort
	ChildHTTPPort      = images.ChildHTTPPort
)

// Timeouts of the harness.
const (
	StartTimeout   = 60 * time.Second // container start until its wait strategy passes
	CleanupTimeout = 30 * time.Second // removing one container or network
	logTail        = 40               // lines of container output logged when a test fails
)

// LocalHost is where published ports are bound and reached: the harness
// publishes on the loopback interface only.
var LocalHost = netip.MustParseAddr("127.0.0.1")

// Env is one test's set of containers and networks. Everything it creates
// carries the test's name in its labels and in its Docker name
// (gr-e2e-<id>-<name>), and is removed when the test ends.
type Env struct {
	owner  testing.TB // the test of New: cleanups run when it ends
	t      testing.TB // the test that calls helpers now (see Scope)
	docker *client.Client
	id     string // random, unique per Env
}

// New returns the test's Env. It fails the test (never skips) when Docker
// is unreachable or when TestMain did not call Main.
func New(t testing.TB) *Env {
	t.Helper()
	cli, err := dockerClient(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var b [4]byte
	_, _ = rand.Read(b[:])
	return &Env{owner: t, t: t, docker: cli, id: hex.EncodeToString(b[:])}
}

// Scope makes the subtest t the one that helpers report to (failures,
// logs, context) until the returned function restores the previous one, so
// that a subtest may use containers of its parent's Env:
//
//	t.Run("partition", func(t *testing.T) {
//		defer env.Scope(t)()
//		...
//	})
//
// Everything created stays owned by the Env's test: it is removed when that
// test ends, not the subtest. Subtests using one Env must not run in
// parallel.
func (e *Env) Scope(t testing.TB) (restore func()) {
	prev := e.t
	e.t = t
	return func() { e.t = prev }
}

// Docker returns the Docker API client, for checks the harness does not
// wrap (inspecting networks, for example).
func (e *Env) Docker() *client.Client { return e.docker }

// ctx is the context of harness calls: the test's, bounded.
func (e *Env) ctx(d time.Duration) (context.Context, context.CancelFunc) {
	return context.WithTimeout(e.t.Context(), d)
}

// labels returns the labels of a resource created for this test.
func (e *Env) labels() map[string]string {
	return map[string]string{
		LabelSuite: "1",
		LabelHost:  hostname,
		LabelPID:   strconv.Itoa(pid),
		LabelTest:  e.t.Name(),
	}
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,40}$`)

// dockerName is the engine-wide unique name of a resource of this Env.
func (e *Env) dockerName(name string) string {
	e.t.Helper()
	if !nameRE.MatchString(name) {
		e.t.Fatalf("harness: name %q: use 1-41 characters of a-z, 0-9 and '-'", name)
	}
	return "gr-e2e-" + e.id + "-" + name
}

// Network is a user-defined bridge network of one test.
type Network struct {
	Name string // Docker name, gr-e2e-<id>-<name>
	ID   string
	// Subnet is the network's own subnet when it was created with
	// NetworkOptions.FixedAddresses; zero otherwise.
	Subnet netip.Prefix
}

// NetworkOptions configures a network.
type NetworkOptions struct {
	// FixedAddresses gives the network a subnet of its own (a free /24 of
	// 10.200.0.0/13), so that a container reconnected after a Disconnect
	// gets back the address it had: a healed partition then looks to the
	// peers like a real WAN cut that ended (same addresses, TCP connections
	// resume), not like a machine that moved. Without it, Docker may hand
	// out a different address on Connect.
	FixedAddresses bool
}

// Network creates a bridge network with a unique Docker name derived from
// name and removes it when the test ends (after the containers on it:
// cleanups run in reverse order).
func (e *Env) Network(name string) *Network {
	e.t.Helper()
	return e.NetworkWith(name, NetworkOptions{})
}

// NetworkWith is Network with options.
func (e *Env) NetworkWith(name string, o NetworkOptions) *Network {
	e.t.Helper()
	full := e.dockerName(name)
	ctx, cancel := e.ctx(CleanupTimeout)
	defer cancel()
	opts := client.NetworkCreateOptions{Driver: "bridge", Labels: e.labels()}
	var subnet netip.Prefix
	var res client.NetworkCreateResult
	var err error
	for attempt := 0; ; attempt++ {
		if o.FixedAddresses {
			var b [2]byte
			_, _ = rand.Read(b[:])
			subnet = netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 200 + b[0]%8, b[1], 0}), 24)
			opts.IPAM = &network.IPAM{Driver: "default", Config: []network.IPAMConfig{{Subnet: subnet}}}
		}
		res, err = e.docker.NetworkCreate(ctx, full, opts)
		if err == nil || !o.FixedAddresses || attempt >= 20 || !strings.Contains(err.Error(), "overlap") {
			break
		}
	}
	if err != nil {
		e.t.Fatalf("harness: create network %s: %v", full, err)
	}
	n := &Network{Name: full, ID: res.ID, Subnet: subnet}
	e.owner.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), CleanupTimeout)
		defer cancel()
		if err := removeNetwork(ctx, e.docker, n.ID); err != nil && !cerrdefs.IsNotFound(err) {
			e.owner.Errorf("harness: cleanup: %v", err)
		}
	})
	return n
}

// ContainerSpec is what Run starts; Redis, NATS and Child fill it for their
// images.
type ContainerSpec struct {
	Image string            // image reference (see Image)
	Cmd   []string          // arguments after the image's entrypoint; nil: the image's CMD
	Env   map[string]string // environment
	Port  string            // main port ("6379/tcp"): the one Addr returns
	Ports []string          // further ports to publish on 127.0.0.1
	Wait  wait.Strategy     // readiness; nil: the main port answers a TCP connect
}

// Run creates and starts a container named name on the given networks
// (name is its alias on each), publishes its ports on 127.0.0.1 and waits
// until spec.Wait passes. The container is removed when the test ends; if
// the test failed, the tail of its output is logged first.
//
// Host ports are chosen here and fixed for the container's life: Addr stays
// valid across Stop/Start, Kill and network Disconnect/Connect (Docker
// would otherwise pick a new random port each time it re-publishes).
func (e *Env) Run(name string, spec ContainerSpec, nets ...*Network) *Container {
	e.t.Helper()
	if spec.Port == "" && (spec.Wait == nil || len(spec.Ports) > 0) {
		e.t.Fatalf("harness: %s: ContainerSpec.Port is empty (a container without ports needs a Wait strategy)", name)
	}
	full := e.dockerName(name)
	var ports []string
	if spec.Port != "" {
		ports = append([]string{spec.Port}, spec.Ports...)
	}
	for i, p := range ports {
		port, err := network.ParsePort(p)
		if err != nil {
			e.t.Fatalf("harness: %s: port %q: %v", name, p, err)
		}
		ports[i] = port.String() // "6379" → "6379/tcp"
	}
	wt := spec.Wait
	if wt == nil {
		wt = wait.ForListeningPort(spec.Port).SkipInternalCheck()
	}
	wt = withTimeout(wt, StartTimeout)

	const attempts = 3
	for attempt := 1; ; attempt++ {
		c := &Container{env: e, Name: full, Alias: name, aliases: map[string][]string{}, addrs: map[string]string{}, ips: map[string]netip.Addr{}}
		if len(ports) > 0 {
			c.Port = ports[0]
		}
		hostPorts, err := freePorts(len(ports))
		if err != nil {
			e.t.Fatalf("harness: %s: %v", name, err)
		}
		bindings := network.PortMap{}
		for i, p := range ports {
			port, _ := network.ParsePort(p)
			bindings[port] = []network.PortBinding{{HostIP: LocalHost, HostPort: strconv.Itoa(hostPorts[i])}}
			c.addrs[port.String()] = net.JoinHostPort(LocalHost.String(), strconv.Itoa(hostPorts[i]))
		}
		req := testcontainers.ContainerRequest{
			Image:        spec.Image,
			Name:         full,
			Cmd:          spec.Cmd,
			Env:          spec.Env,
			ExposedPorts: ports,
			Labels:       e.labels(),
			WaitingFor:   wt,
			HostConfigModifier: func(hc *container.HostConfig) {
				hc.PortBindings = bindings
			},
		}
		if len(nets) > 0 {
			req.NetworkAliases = map[string][]string{}
			for _, n := range nets {
				req.Networks = append(req.Networks, n.Name)
				req.NetworkAliases[n.Name] = []string{name}
				c.aliases[n.Name] = []string{name}
			}
		}

		ctx, cancel := e.ctx(StartTimeout + 30*time.Second)
		start := time.Now()
		tc, err := testcontainers.GenericContainer(ctx, testcontainers.GenericContainerRequest{
			ContainerRequest: req,
			Started:          true,
			Logger:           tclog.TestLogger(e.owner),
		})
		cancel()
		if tc != nil {
			c.tc = tc
			c.ID = tc.GetContainerID()
		}
		if err != nil && attempt < attempts && portTaken(err) {
			// Another process took a chosen port in between: try others.
			e.t.Logf("harness: %s: host port taken, retrying: %v", name, err)
			if tc != nil {
				c.cleanup()
			}
			continue
		}
		if tc != nil {
			e.owner.Cleanup(c.cleanup)
		}
		if err != nil {
			if tc != nil {
				e.t.Logf("harness: %s output:\n%s", name, c.tail(logTail))
			}
			e.t.Fatalf("harness: start %s (%s): %v", name, spec.Image, err)
		}
		e.t.Logf("harness: %s (%s) ready at %s in %s", name, spec.Image, c.Addr(), time.Since(start).Round(time.Millisecond))
		return c
	}
}

// freePorts returns n distinct TCP ports that are free on 127.0.0.1 now.
func freePorts(n int) ([]int, error) {
	ports := make([]int, 0, n)
	var ls []net.Listener
	defer func() {
		for _, l := range ls {
			_ = l.Close()
		}
	}()
	for range n {
		l, err := net.Listen("tcp", net.JoinHostPort(LocalHost.String(), "0"))
		if err != nil {
			return nil, fmt.Errorf("harness: find a free port: %w", err)
		}
		ls = append(ls, l)
		ports = append(ports, l.Addr().(*net.TCPAddr).Port)
	}
	return ports, nil
}

func portTaken(err error) bool {
	s := err.Error()
	return strings.Contains(s, "port is already allocated") || strings.Contains(s, "address already in use")
}

// withTimeout bounds the whole strategy s by d.
func withTimeout(s wait.Strategy, d time.Duration) wait.Strategy {
	return wait.ForAll(s).WithDeadline(d)
}

// RedisOptions configures a Redis container.
type RedisOptions struct {
	// ReplicaOf makes the server a replica of "host port" or "host:port"
	// (host: a container name on a shared network).
	ReplicaOf string
	// Password sets requirepass, and masterauth for a replica.
	Password string
	// Args are further redis-server arguments ("--maxmemory", "64mb").
	Args []string
}

// Redis starts a redis-server (gr-redis:e2e or $GR_E2E_REDIS_IMAGE) with
// an append-only file in /data, reachable as name:6379 on nets and at
// Addr() from the test.
func (e *Env) Redis(name string, o RedisOptions, nets ...*Network) *Container {
	e.t.Helper()
	args := append([]string{}, images.RedisArgs...)
	if o.ReplicaOf != "" {
		host, port, ok := strings.Cut(strings.Replace(o.ReplicaOf, ":", " ", 1), " ")
		if !ok {
			port = "6379"
		}
		args = append(args, "--replicaof", host, strings.TrimSpace(port))
	}
	if o.Password != "" {
		args = append(args, "--requirepass", o.Password, "--masterauth", o.Password)
	}
	args = append(args, o.Args...)
	return e.Run(name, ContainerSpec{
		Image: Image(e.t, images.Redis()),
		Cmd:   args,
		Port:  RedisPort,
		Wait:  wait.ForAll(wait.ForLog("Ready to accept connections"), wait.ForListeningPort(RedisPort).SkipInternalCheck(), ForRESP(RedisPort)),
	}, nets...)
}

// NATSOptions configures a NATS server container.
type NATSOptions struct {
	// ServerName is the server's name (-n); default: the container name.
	ServerName string
	// User and Password, when set, are required from clients.
	User, Password string
	// Args are further nats-server arguments.
	Args []string
}

// NATS starts a nats-server with JetStream on file storage in /data
// (gr-nats:e2e or $GR_E2E_NATS_IMAGE), reachable as name:4222 on nets and
// at Addr() from the test; MappedAddr(NATSMonitoringPort) is its HTTP
// monitoring endpoint.
func (e *Env) NATS(name string, o NATSOptions, nets ...*Network) *Container {
	e.t.Helper()
	server := o.ServerName
	if server == "" {
		server = name
	}
	args := append(append([]string{}, images.NATSArgs...), "--server_name", server)
	if o.User != "" {
		args = append(args, "--user", o.User, "--pass", o.Password)
	}
	args = append(args, o.Args...)
	return e.Run(name, ContainerSpec{
		Image: Image(e.t, images.NATS()),
		Cmd:   args,
		Port:  NATSPort,
		Ports: []string{NATSMonitoringPort},
		Wait:  wait.ForAll(wait.ForLog("Server is ready"), wait.ForListeningPort(NATSPort).SkipInternalCheck(), ForNATS(NATSPort, true)),
	}, nets...)
}

// ChildOptions configures a child container; see `child --help`. Fields
// left empty are not passed (the child's defaults apply).
type ChildOptions struct {
	Instance      string // GR_INSTANCE (required by the child)
	Region        string // GR_REGION (required by the child)
	RedisAddr     string // GR_REDIS_ADDR, "redis-sgp:6379": a container name on a shared network
	RedisPassword string // GR_REDIS_PASSWORD
	Password      string // GR_PASSWORD: clients must AUTH
	NATSURL       string // GR_NATS_URL, "nats://nats-sgp:4222"; empty: the child replicates nowhere
	Peers         string // GR_PEERS, "fra=nats://nats-fra:4222,iad=nats://nats-iad:4222"
	LogLevel      string // GR_LOG_LEVEL; default "debug"
	// Env holds further GR_* variables (they win over the fields above).
	Env map[string]string
	// Args are further flags.
	Args []string
}

// Child starts the region daemon (gr-child:e2e) listening on 0.0.0.0:6380
// inside its networks, reachable as name:6380 there and at Addr() from
// the test; its HTTP endpoint (GR_HTTP, port 9121) is at
// MappedAddr(ChildHTTPPort).
func (e *Env) Child(name string, o ChildOptions, nets ...*Network) *Container {
	e.t.Helper()
	env := map[string]string{"GR_LISTEN": "0.0.0.0:6380", "GR_HTTP": "0.0.0.0:9121", "GR_LOG_LEVEL": "debug"}
	set := func(k, v string) {
		if v != "" {
			env[k] = v
		}
	}
	set("GR_INSTANCE", o.Instance)
	set("GR_REGION", o.Region)
	set("GR_REDIS_ADDR", o.RedisAddr)
	set("GR_REDIS_PASSWORD", o.RedisPassword)
	set("GR_PASSWORD", o.Password)
	set("GR_NATS_URL", o.NATSURL)
	set("GR_PEERS", o.Peers)
	set("GR_LOG_LEVEL", o.LogLevel)
	for k, v := range o.Env {
		env[k] = v
	}
	return e.Run(name, ContainerSpec{
		Image: Image(e.t, images.Child()),
		Cmd:   o.Args,
		Env:   env,
		Port:  ChildPort,
		Ports: []string{ChildHTTPPort},
		Wait:  wait.ForAll(wait.ForListeningPort(ChildPort).SkipInternalCheck(), ForRESP(ChildPort)),
	}, nets...)
}

// String names the network for logs.
func (n *Network) String() string { return fmt.Sprintf("%s (%.12s)", n.Name, n.ID) }
