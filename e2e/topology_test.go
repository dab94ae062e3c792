package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"

	"github.com/globalreplica/globalreplica/e2e/harness"
	"github.com/globalreplica/globalreplica/e2e/images"
)

// The multi-region topology of issue 6, shared by the scenarios:
//
//	WAN network (fixed addresses): nats-mgr, manager, and per region nats-<r>, child-<r>
//	region network <r>:            redis-<r>, redis-<r>-replica, nats-<r>, child-<r>
//
// Every region has a Redis master and a replica (REPLICAOF on the command
// line), a NATS server with JetStream and a child joined to the channel
// manager (--manager-nats). The manager's config store is a NATS of its own
// (nats-mgr), so that restarting a region's NATS leaves the desired state
// alone; one channel-manager runs `run` (the control loop). The regions'
// Redis addresses in the desired state are the aliases on the region
// network, as the children see them. Children reach the other regions' NATS
// over the WAN. The test reaches every container through its published
// ports on 127.0.0.1, which go through the region network (or the WAN for
// nats-mgr), never cut by a scenario.

const (
	instanceName = "e2e"
	// maxValueBytes is the children's --max-value-bytes: small, so that
	// the oversized-value checks stay cheap.
	maxValueBytes = 1 << 20
	// convergeTimeout bounds the wait for the channels to drain after a
	// scenario's writes.
	convergeTimeout = 90 * time.Second
	// failoverAfter is the manager's --failover-after: how long every
	// child must have seen a master down before `run` fails it over.
	failoverAfter = 2 * time.Second
)

var regionIDs = []string{"sgp", "fra", "iad"}

type region struct {
	id                    string
	net                   *harness.Network
	redis, replica        *harness.Container
	nats, child           *harness.Container
	app                   *redis.Client // through the child, as an application
	natsURL               string        // the region's NATS from the test
	redisAddr, replicaAdr string        // as the children see them
}

type topology struct {
	t       *testing.T // the test that owns the containers
	env     *harness.Env
	wan     *harness.Network
	cfgNATS *harness.Container
	manager *harness.Container
	regions []*region
	byID    map[string]*region
	ncs     map[string]*nats.Conn // the test's connections to the regions' NATS
	helps   map[string]string     // channel-manager help texts, by command
	started time.Duration
}

// newTopology starts the whole topology and waits until every channel runs.
func newTopology(t *testing.T) *topology {
	t.Helper()
	start := time.Now()
	harness.BuildImages(t, images.All()...)
	t.Logf("images ready in %s", time.Since(start).Round(time.Millisecond))

	env := harness.New(t)
	top := &topology{t: t, env: env, byID: map[string]*region{}, ncs: map[string]*nats.Conn{}, helps: map[string]string{}}
	top.wan = env.NetworkWith("wan", harness.NetworkOptions{FixedAddresses: true})
	top.cfgNATS = env.NATS("nats-mgr", harness.NATSOptions{}, top.wan)
	for _, id := range regionIDs {
		r := &region{id: id, net: env.Network(id)}
		r.redisAddr, r.replicaAdr = "redis-"+id+":6379", "redis-"+id+"-replica:6379"
		r.redis = env.Redis("redis-"+id, harness.RedisOptions{Args: redisFastFailure}, r.net)
		r.replica = env.Redis("redis-"+id+"-replica", harness.RedisOptions{ReplicaOf: r.redisAddr, Args: redisFastFailure}, r.net)
		// The published ports go through the region network: the first one.
		r.nats = env.NATS("nats-"+id, harness.NATSOptions{}, r.net, top.wan)
		r.natsURL = "nats://" + r.nats.Addr()
		top.regions = append(top.regions, r)
		top.byID[id] = r
	}

	top.cli(t, 0, "instance", "create", instanceName)
	for _, r := range top.regions {
		top.cli(t, 0, "region", "add", r.id, "--region-nats", "nats://nats-"+r.id+":4222", "--redis", r.redisAddr, "--replica", r.replicaAdr)
	}
	for _, r := range top.regions {
		r.child = env.Child("child-"+r.id, top.childOptions(r), r.net, top.wan)
		r.app = redis.NewClient(&redis.Options{
			Addr: r.child.Addr(), DialTimeout: 2 * time.Second, ReadTimeout: 5 * time.Second, WriteTimeout: 5 * time.Second,
			MaxRetries: -1, // a retried INCRBY could count twice: the test decides
			PoolSize:   16,
		})
		t.Cleanup(func() { _ = r.app.Close() })
	}
	run := []string{"run", "--interval", "1s", "--nats", "nats://nats-mgr:4222", "--instance", instanceName, "--log-level", "info"}
	if strings.Contains(top.help(t, "run"), "--failover-after") {
		run = append(run, "--failover-after", failoverAfter.String())
	}
	top.manager = env.Manager("manager", run, top.wan)
	top.waitHealthy(t, 60*time.Second)
	top.started = time.Since(start)
	t.Logf("topology of %d regions up in %s (images included)", len(top.regions), top.started.Round(time.Millisecond))
	return top
}

// redisFastFailure makes a replica notice a lost master within seconds.
var redisFastFailure = []string{"--repl-timeout", "3", "--repl-ping-replica-period", "1"}

func (top *topology) childOptions(r *region) harness.ChildOptions {
	return harness.ChildOptions{
		Instance:  instanceName,
		Region:    r.id,
		RedisAddr: r.redisAddr,
		NATSURL:   "nats://nats-" + r.id + ":4222",
		LogLevel:  "info",
		Env: map[string]string{
			"GR_MANAGER_NATS":    "nats://nats-mgr:4222",
			"GR_MAX_VALUE_BYTES": strconv.Itoa(maxValueBytes),
		},
	}
}

// cli runs one channel-manager command in a container on the WAN (where
// the config store and every region's NATS are reachable by the names in
// the desired state) and returns its output; it fails the test unless the
// exit code is want.
func (top *topology) cli(t testing.TB, want int, args ...string) string {
	t.Helper()
	full := append([]string{"--nats", "nats://nats-mgr:4222", "--instance", instanceName}, args...)
	code, out := top.env.ManagerCLI(3*time.Minute, full, top.wan)
	if code != want {
		t.Fatalf("channel-manager %s: exit code %d, want %d; output:\n%s", strings.Join(args, " "), code, want, out)
	}
	return out
}

// help returns the help text of a channel-manager command ("" for the
// root), asked once.
func (top *topology) help(t testing.TB, command ...string) string {
	t.Helper()
	key := strings.Join(command, " ")
	if h, ok := top.helps[key]; ok {
		return h
	}
	h := top.cli(t, 0, append(command, "--help")...)
	top.helps[key] = h
	return h
}

// verify runs `channel-manager verify` and fails the test unless every
// region shows the same state.
func (top *topology) verify(t testing.TB) {
	t.Helper()
	out := top.cli(t, 0, "verify", "--json")
	var v struct {
		Equal   bool `json:"equal"`
		Regions []struct {
			Region string `json:"region"`
			Keys   int64  `json:"keys"`
		} `json:"regions"`
	}
	if err := json.Unmarshal([]byte(jsonPart(out)), &v); err != nil {
		t.Fatalf("verify --json: %v; output:\n%s", err, out)
	}
	if !v.Equal || len(v.Regions) != len(top.regions) {
		t.Fatalf("verify: regions differ or are missing:\n%s", out)
	}
	t.Logf("channel-manager verify: %d regions equal, %d keys each", len(v.Regions), v.Regions[0].Keys)
}

// jsonPart drops log lines before the JSON document of a CLI's output.
func jsonPart(out string) string {
	if i := strings.Index(out, "{"); i >= 0 {
		return out[i:]
	}
	return out
}

// regionInfo is what a child's INFO says of its region's position and
// channels.
type regionInfo struct {
	seq      uint64            // last sequence number issued here
	backlog  int64             // op-log entries not yet in the stream
	applied  map[string]uint64 // origin → applied sequence
	channels map[string]string // origin → channel state
}

func parseInfo(s string) regionInfo {
	ri := regionInfo{applied: map[string]uint64{}, channels: map[string]string{}}
	for line := range strings.SplitSeq(s, "\n") {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		switch {
		case k == "seq":
			ri.seq, _ = strconv.ParseUint(v, 10, 64)
		case k == "oplog_backlog":
			ri.backlog, _ = strconv.ParseInt(v, 10, 64)
		case strings.HasPrefix(k, "applied_"):
			n, _ := strconv.ParseUint(v, 10, 64)
			ri.applied[strings.TrimPrefix(k, "applied_")] = n
		case strings.HasPrefix(k, "channel_"):
			for part := range strings.SplitSeq(v, ",") {
				if st, ok := strings.CutPrefix(part, "state="); ok {
					ri.channels[strings.TrimPrefix(k, "channel_")] = st
				}
			}
		}
	}
	return ri
}

func (r *region) info(ctx context.Context) (regionInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	s, err := r.app.Info(ctx).Result()
	if err != nil {
		return regionInfo{}, fmt.Errorf("INFO of %s: %w", r.id, err)
	}
	return parseInfo(s), nil
}

// snapshot is every region's INFO at one moment.
type snapshot map[string]regionInfo

func (top *topology) snapshot(ctx context.Context) (snapshot, error) {
	s := snapshot{}
	for _, r := range top.regions {
		ri, err := r.info(ctx)
		if err != nil {
			return nil, err
		}
		s[r.id] = ri
	}
	return s, nil
}

// converged reports whether every region applied every other region's last
// sequence and shipped its whole op log; the detail says what is missing.
func (s snapshot) converged() (bool, string) {
	var missing []string
	for dest, di := range s {
		if di.backlog != 0 {
			missing = append(missing, fmt.Sprintf("%s: op-log backlog %d", dest, di.backlog))
		}
		for origin, oi := range s {
			if origin == dest {
				continue
			}
			if di.applied[origin] != oi.seq {
				missing = append(missing, fmt.Sprintf("%s applied %s:%d of %d (channel %s)", dest, origin, di.applied[origin], oi.seq, di.channels[origin]))
			}
		}
	}
	slices.Sort(missing)
	return len(missing) == 0, strings.Join(missing, "\n")
}

// applied is the number of remote ops applied since before, over all regions.
func (s snapshot) appliedSince(before snapshot) uint64 {
	var n uint64
	for dest, di := range s {
		for origin, v := range di.applied {
			if origin != dest {
				n += v - before[dest].applied[origin]
			}
		}
	}
	return n
}

// issuedSince is the number of ops issued since before, over all regions.
func (s snapshot) issuedSince(before snapshot) uint64 {
	var n uint64
	for id, ri := range s {
		n += ri.seq - before[id].seq
	}
	return n
}

// waitConverged waits until the channels drained (see converged) and
// returns the final snapshot and how long it took.
func (top *topology) waitConverged(t testing.TB, timeout time.Duration) (snapshot, time.Duration) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	var detail string
	for {
		s, err := top.snapshot(t.Context())
		if err == nil {
			ok, d := s.converged()
			if ok {
				return s, time.Since(start)
			}
			detail = d
		} else {
			detail = err.Error()
		}
		if time.Now().After(deadline) {
			t.Fatalf("no convergence within %s; last state:\n%s", timeout, detail)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// waitHealthy waits until every child answers, serves writes and runs a
// channel from every other region.
func (top *topology) waitHealthy(t testing.TB, timeout time.Duration) {
	t.Helper()
	waitFor(t, timeout, "every channel running and every region writable", func() (bool, string) {
		ctx := t.Context()
		var bad []string
		for _, r := range top.regions {
			ri, err := r.info(ctx)
			if err != nil {
				bad = append(bad, err.Error())
				continue
			}
			for _, o := range top.regions {
				if o != r && ri.channels[o.id] != "running" {
					bad = append(bad, fmt.Sprintf("%s: channel from %s is %q", r.id, o.id, ri.channels[o.id]))
				}
			}
			// Writes are refused (TRYAGAIN) until the region checked its
			// Redis against its stream.
			c, cancel := context.WithTimeout(ctx, 5*time.Second)
			err = r.app.Set(c, "e2e:ready:"+r.id, "1", 0).Err()
			cancel()
			if err != nil {
				bad = append(bad, fmt.Sprintf("%s: write: %v", r.id, err))
			}
		}
		return len(bad) == 0, strings.Join(bad, "\n")
	})
}

// restore brings the topology back to normal after a scenario, whatever
// it left behind: every container running and attached to its networks.
func (top *topology) restore(t testing.TB) {
	t.Helper()
	for _, c := range top.containers() {
		if !c.Running() {
			t.Logf("restore: starting %s", c.Alias)
			c.Start()
		}
	}
	for _, r := range top.regions {
		for _, c := range []*harness.Container{r.nats, r.child} {
			if !slices.Contains(c.Networks(), top.wan.Name) {
				t.Logf("restore: reconnecting %s to the WAN", c.Alias)
				c.Connect(top.wan)
			}
		}
	}
	top.waitHealthy(t, 60*time.Second)
	// A scenario starts from drained channels: its counts of ops issued
	// and applied are its own.
	top.waitConverged(t, convergeTimeout)
}

func (top *topology) containers() []*harness.Container {
	cs := []*harness.Container{top.cfgNATS}
	for _, r := range top.regions {
		cs = append(cs, r.redis, r.replica, r.nats, r.child)
	}
	return append(cs, top.manager)
}

// isNetErr reports whether err is a failure to reach the server (the
// write may or may not have happened) rather than a Redis error reply (it
// did not).
func isNetErr(err error) bool {
	if err == nil || errors.Is(err, redis.Nil) {
		return false
	}
	var re redis.Error
	return !errors.As(err, &re)
}
