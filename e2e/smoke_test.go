package e2e

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/client"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"

	"github.com/globalreplica/globalreplica/e2e/harness"
	"github.com/globalreplica/globalreplica/e2e/images"
)

// TestSmoke checks the foundation of the suite: the locally built images
// start and serve, the test reaches them on 127.0.0.1, JetStream works with
// file storage, Redis replication works across the test network, and a
// network disconnect really partitions a container (its replica loses the
// link) until it is reconnected.
func TestSmoke(t *testing.T) {
	start := time.Now()
	harness.BuildImages(t, images.Redis(), images.NATS()) // logs each image's timing
	t.Logf("images ready in %s", time.Since(start).Round(time.Millisecond))

	env := harness.New(t)
	net := env.Network("smoke")
	master := env.Redis("redis", harness.RedisOptions{}, net)
	replica := env.Redis("replica", harness.RedisOptions{
		ReplicaOf: "redis:6379",
		// Notice a lost master within seconds, not the default minute.
		Args: []string{"--repl-timeout", "2", "--repl-ping-replica-period", "1"},
	}, net)
	ns := env.NATS("nats", harness.NATSOptions{}, net)

	ctx := t.Context()

	// Redis through the published port.
	mc := redisClient(t, master.Addr())
	if err := mc.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING master: %v", err)
	}
	if err := mc.Set(ctx, "smoke", "before", 0).Err(); err != nil {
		t.Fatalf("SET: %v", err)
	}
	if dir, err := mc.ConfigGet(ctx, "dir").Result(); err != nil || dir["dir"] != "/data" {
		t.Fatalf("CONFIG GET dir = %v, %v; want /data", dir, err)
	}
	if aof, err := mc.ConfigGet(ctx, "appendonly").Result(); err != nil || aof["appendonly"] != "yes" {
		t.Fatalf("CONFIG GET appendonly = %v, %v; want yes", aof, err)
	}
	// /data is writable: a rewrite of the append-only file must succeed.
	if err := mc.BgRewriteAOF(ctx).Err(); err != nil {
		t.Fatalf("BGREWRITEAOF: %v", err)
	}
	waitFor(t, 10*time.Second, "AOF rewrite to finish without error", func() (bool, string) {
		info := mc.Info(ctx, "persistence").Val()
		return field(info, "aof_rewrite_in_progress") == "0" && field(info, "aof_last_bgrewrite_status") == "ok", info
	})

	rc := redisClient(t, replica.Addr())
	waitFor(t, 15*time.Second, "replica to sync", func() (bool, string) {
		info := rc.Info(ctx, "replication").Val()
		return field(info, "master_link_status") == "up" && rc.Get(ctx, "smoke").Val() == "before", info
	})

	// NATS with JetStream on file storage.
	nc, err := nats.Connect("nats://"+ns.Addr(), nats.Timeout(5*time.Second))
	if err != nil {
		t.Fatalf("connect to NATS: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatalf("JetStream: %v", err)
	}
	stream, err := js.CreateStream(ctx, jetstream.StreamConfig{
		Name: "SMOKE", Subjects: []string{"smoke.>"}, Storage: jetstream.FileStorage, Duplicates: time.Minute,
	})
	if err != nil {
		t.Fatalf("create stream: %v", err)
	}
	for range 2 { // the same message id twice: the duplicate window drops the second
		if _, err := js.Publish(ctx, "smoke.op", []byte("op-1"), jetstream.WithMsgID("sgp:1")); err != nil {
			t.Fatalf("publish: %v", err)
		}
	}
	si, err := stream.Info(ctx)
	if err != nil {
		t.Fatalf("stream info: %v", err)
	}
	if si.State.Msgs != 1 || si.Config.Storage != jetstream.FileStorage {
		t.Fatalf("stream state %+v, storage %v; want 1 message on file storage", si.State, si.Config.Storage)
	}

	// Partition: cut the master off the network.
	master.Disconnect(net)
	if got := master.Networks(); slices.Contains(got, net.Name) {
		t.Fatalf("master still on %s after disconnect: %v", net.Name, got)
	}
	if attached(t, env, net, master.ID) {
		t.Fatalf("network %s still lists the master after disconnect", net.Name)
	}
	if !attached(t, env, net, replica.ID) {
		t.Fatalf("network %s lost the replica", net.Name)
	}
	waitFor(t, 20*time.Second, "replica to lose its master", func() (bool, string) {
		info := rc.Info(ctx, "replication").Val()
		return field(info, "master_link_status") == "down", info
	})

	// Heal: reconnect with the same alias; replication resumes.
	master.Connect(net)
	if !attached(t, env, net, master.ID) {
		t.Fatalf("network %s does not list the master after connect", net.Name)
	}
	// The published port is fixed at creation: the same client works again.
	waitFor(t, 20*time.Second, "master reachable from the test again", func() (bool, string) {
		err := mc.Set(ctx, "smoke", "after", 0).Err()
		return err == nil, errString(err)
	})
	waitFor(t, 30*time.Second, "replica to resync after heal", func() (bool, string) {
		info := rc.Info(ctx, "replication").Val()
		return field(info, "master_link_status") == "up" && rc.Get(ctx, "smoke").Val() == "after", info
	})
	t.Logf("smoke test done in %s", time.Since(start).Round(time.Millisecond))
}

// TestChildContainer starts a child on a Redis container, talks RESP to it
// from the test, and checks it comes back at the same address after a
// crash (SIGKILL, then start): the harness's child helper and crash
// controls. Replication and write semantics are the scenarios' business.
func TestChildContainer(t *testing.T) {
	harness.BuildImages(t, images.Redis(), images.Child())
	env := harness.New(t)
	net := env.Network("sgp")
	env.Redis("redis-sgp", harness.RedisOptions{}, net)
	ch := env.Child("child-sgp", harness.ChildOptions{
		Instance: "smoke", Region: "sgp", RedisAddr: "redis-sgp:6379",
	}, net)

	ctx := t.Context()
	cc := redisClient(t, ch.Addr())
	check := func(when string) {
		t.Helper()
		if err := cc.Ping(ctx).Err(); err != nil {
			t.Fatalf("PING through the child %s: %v", when, err)
		}
		if err := cc.Get(ctx, "no-such-key").Err(); !errors.Is(err, redis.Nil) {
			t.Fatalf("GET of a missing key through the child %s: %v, want nil reply", when, err)
		}
	}
	check("at start")
	addr := ch.Addr()
	ch.Kill()
	if ch.Running() {
		t.Fatal("child still running after Kill")
	}
	ch.Start()
	if ch.Addr() != addr {
		t.Fatalf("child address moved from %s to %s across a restart", addr, ch.Addr())
	}
	check("after a crash and restart") // the same client reconnects by itself
}

func redisClient(t *testing.T, addr string) *redis.Client {
	t.Helper()
	c := redis.NewClient(&redis.Options{Addr: addr, DialTimeout: 2 * time.Second, ReadTimeout: 3 * time.Second, MaxRetries: -1})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// attached reports whether the network lists the container as attached,
// as the Docker API sees it.
func attached(t *testing.T, env *harness.Env, n *harness.Network, containerID string) bool {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	in, err := env.Docker().NetworkInspect(ctx, n.ID, client.NetworkInspectOptions{})
	if err != nil {
		t.Fatalf("inspect network %s: %v", n.Name, err)
	}
	_, ok := in.Network.Containers[containerID]
	return ok
}

// waitFor polls cond until it holds or d passes; the detail of the last
// poll goes into the failure.
func waitFor(t testing.TB, d time.Duration, what string, cond func() (bool, string)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, detail := cond()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s; last state:\n%s", d, what, detail)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// field returns the value of key in the output of Redis INFO.
func field(info, key string) string {
	for line := range strings.SplitSeq(info, "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), key+":"); ok {
			return v
		}
	}
	return ""
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
