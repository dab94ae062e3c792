package testredis_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/globalreplica/globalreplica/internal/testredis"
)

func TestStart(t *testing.T) {
	ctx := context.Background()
	a := testredis.Start(t)
	b := testredis.Start(t)
	if a.Addr() == b.Addr() {
		t.Fatalf("two servers on %s", a.Addr())
	}
	if err := a.Client().Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	if n, err := b.Client().Exists(ctx, "k").Result(); err != nil || n != 0 {
		t.Fatalf("servers share data: %d, %v", n, err)
	}
	cfg, err := a.Client().ConfigGet(ctx, "save").Result()
	if err != nil || cfg["save"] != "" {
		t.Fatalf("save = %q, %v", cfg["save"], err)
	}
	if cfg, _ := a.Client().ConfigGet(ctx, "dir").Result(); cfg["dir"] != a.Dir {
		t.Fatalf("dir = %q, want %q", cfg["dir"], a.Dir)
	}
}

func TestStartPassword(t *testing.T) {
	ctx := context.Background()
	s := testredis.Start(t, testredis.WithPassword("pw"), testredis.WithAppendOnly())
	if err := s.Client().Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	anon := redis.NewClient(&redis.Options{Addr: s.Addr()})
	defer func() { _ = anon.Close() }()
	if err := anon.Ping(ctx).Err(); err == nil || !strings.HasPrefix(err.Error(), "NOAUTH") {
		t.Fatalf("PING without password: %v", err)
	}
	if cfg, _ := s.Client().ConfigGet(ctx, "appendonly").Result(); cfg["appendonly"] != "yes" {
		t.Fatalf("appendonly = %q", cfg["appendonly"])
	}
}

func TestReplicaAndKill(t *testing.T) {
	ctx := context.Background()
	primary := testredis.Start(t)
	replica := testredis.Start(t, testredis.WithReplicaOf(primary.Addr()))
	if err := primary.Client().Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for replica.Client().Get(ctx, "k").Val() != "v" {
		if time.Now().After(deadline) {
			t.Fatal("the replica did not catch up")
		}
		time.Sleep(20 * time.Millisecond)
	}
	primary.Kill()
	if err := primary.Client().Ping(ctx).Err(); err == nil {
		t.Fatal("PING after Kill")
	}
}

// TestStartReplicaAndRestart: StartReplica waits for the link; a killed
// server restarts on its port, empty without persistence, and can then be
// made a replica of another.
func TestStartReplicaAndRestart(t *testing.T) {
	ctx := context.Background()
	primary := testredis.Start(t, testredis.WithPassword("pw"))
	if err := primary.Client().Set(ctx, "k", "v", 0).Err(); err != nil {
		t.Fatal(err)
	}
	replica := primary.StartReplica(t)
	deadline := time.Now().Add(10 * time.Second)
	for replica.Client().Get(ctx, "k").Val() != "v" {
		if time.Now().After(deadline) {
			t.Fatal("the replica did not sync")
		}
		time.Sleep(20 * time.Millisecond)
	}
	primary.Kill()
	primary.Restart()
	if n, err := primary.Client().DBSize(ctx).Result(); err != nil || n != 0 {
		t.Fatalf("restarted server: dbsize %d, %v (want an empty server)", n, err)
	}
	if err := replica.Client().Do(ctx, "REPLICAOF", "NO", "ONE").Err(); err != nil {
		t.Fatal(err)
	}
	if err := primary.Client().Do(ctx, "CONFIG", "SET", "masterauth", "pw").Err(); err != nil {
		t.Fatal(err)
	}
	if err := primary.Client().Do(ctx, "REPLICAOF", "127.0.0.1", replica.Port).Err(); err != nil {
		t.Fatal(err)
	}
	deadline = time.Now().Add(10 * time.Second)
	for primary.Client().Get(ctx, "k").Val() != "v" {
		if time.Now().After(deadline) {
			t.Fatal("the restarted server did not sync from its new master")
		}
		time.Sleep(20 * time.Millisecond)
	}
}
