package manager_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/internal/daemon"
	"github.com/globalreplica/globalreplica/internal/testnats"
	"github.com/globalreplica/globalreplica/internal/testredis"
	"github.com/globalreplica/globalreplica/manager"
)

// child is one running region: its child process, its NATS and its Redis.
type child struct {
	id   string
	nats *testnats.Server
	d    *daemon.Daemon
	app  *redis.Client // the child's RESP endpoint
	raw  *redis.Client // the region's Redis itself, database 0
}

// startChildren runs one child per region, all replicating to each other,
// each region with its own NATS (with credentials) and its own Redis.
func startChildren(t *testing.T, ids ...string) ([]*child, []manager.Region) {
	t.Helper()
	cs := make([]*child, len(ids))
	regions := make([]manager.Region, len(ids))
	for i, id := range ids {
		cs[i] = &child{id: id, nats: testnats.StartAuth(t, id, "gr-"+id, "secret-"+id)}
		regions[i] = manager.Region{ID: id, NATS: cs[i].nats.URL()}
	}
	for _, c := range cs {
		var peers []daemon.Peer
		for _, o := range cs {
			if o != c {
				peers = append(peers, daemon.Peer{Region: o.id, NATS: daemon.NATS{URL: o.nats.URL(), User: "gr-" + o.id, Password: "secret-" + o.id}})
			}
		}
		rd := testredis.Start(t)
		d, err := daemon.Start(context.Background(), daemon.Config{
			Instance: "test", Region: c.id, Listen: "127.0.0.1:0",
			Redis: *rd.Options(), NATS: daemon.NATS{URL: c.nats.URL(), User: "gr-" + c.id, Password: "secret-" + c.id},
			Peers: peers, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- d.Run(ctx) }()
		c.d, c.raw = d, rd.Client()
		c.app = redis.NewClient(&redis.Options{Addr: d.RESPAddr()})
		t.Cleanup(func() {
			_ = c.app.Close()
			cancel()
			if err := <-done; err != nil {
				t.Errorf("%s stopped with %v", c.id, err)
			}
		})
	}
	return cs, regions
}

// options reach the test regions' NATS with their credentials.
func options(regions []manager.Region) manager.ControlOptions {
	ids := map[string]string{}
	for _, r := range regions {
		ids[r.NATS] = r.ID
	}
	return manager.ControlOptions{Timeout: 10 * time.Second, Dial: func(url string) (*nats.Conn, error) {
		if id, ok := ids[url]; ok {
			return nats.Connect(url, nats.UserInfo("gr-"+id, "secret-"+id))
		}
		return nats.Connect(url, nats.Timeout(time.Second))
	}}
}

// converged waits until Verify reports equal digests.
func converged(t *testing.T, regions []manager.Region) manager.VerifyReport {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		rep, err := manager.Verify(context.Background(), "test", regions, manager.VerifyOptions{ControlOptions: options(regions)})
		if err == nil && rep.Equal {
			return rep
		}
		if time.Now().After(deadline) {
			t.Fatalf("regions did not converge: %+v %v", rep, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestVerify(t *testing.T) {
	ctx := context.Background()
	cs, regions := startChildren(t, "fra", "sgp", "iad")
	for i, c := range cs {
		for j := range 50 {
			k := fmt.Sprintf("%s:%d", c.id, j)
			var err error
			switch j % 4 {
			case 0:
				err = c.app.Set(ctx, k, j, 0).Err()
			case 1:
				err = c.app.HSet(ctx, k, "f", j, "g", i).Err()
			case 2:
				err = c.app.SAdd(ctx, k, "a", "b", j).Err()
			case 3:
				err = c.app.ZAdd(ctx, k, redis.Z{Score: float64(j), Member: "m"}).Err()
			}
			if err != nil {
				t.Fatal(err)
			}
		}
		if err := c.app.Set(ctx, "ttl:"+c.id, "v", time.Hour).Err(); err != nil {
			t.Fatal(err)
		}
	}
	rep := converged(t, regions)
	if len(rep.Regions) != 3 || rep.Regions[0].Digest.Keys != 153 || len(rep.Keys) != 0 || rep.Bits != 0 {
		t.Fatalf("converged report: %+v", rep)
	}

	// corruption: writes made directly in database 0 of one region's Redis
	sgp, iad := cs[1], cs[2]
	if err := sgp.raw.HSet(ctx, "fra:1", "f", "corrupt").Err(); err != nil {
		t.Fatal(err)
	}
	if err := iad.raw.Del(ctx, "sgp:2").Err(); err != nil {
		t.Fatal(err)
	}
	if err := iad.raw.PExpire(ctx, "iad:3", time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	rep, err := manager.Verify(ctx, "test", regions, manager.VerifyOptions{ControlOptions: options(regions)})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Equal || rep.Truncated || rep.DifferingBuckets == 0 || rep.DifferingBuckets > 3 {
		t.Fatalf("corrupted report: %+v", rep)
	}
	var keys []string
	for _, k := range rep.Keys {
		keys = append(keys, k.Key)
	}
	if fmt.Sprint(keys) != "[fra:1 iad:3 sgp:2]" {
		t.Fatalf("differing keys %v", keys)
	}
	v := rep.Keys[0].Views // fra:1 in fra, sgp, iad
	if len(v) != 3 || v[0].Region != "fra" || v[1].Region != "sgp" || v[0].Value != `f="1" g="0"` || v[1].Value != `f="corrupt" g="0"` || v[2].Sum != v[0].Sum {
		t.Fatalf("views of fra:1: %+v", v)
	}
	v = rep.Keys[2].Views // sgp:2 deleted in iad
	if !v[0].Exists || !v[1].Exists || v[2].Exists || v[0].Type != "set" {
		t.Fatalf("views of sgp:2: %+v", v)
	}
	v = rep.Keys[1].Views // iad:3 got a TTL in iad
	if v[0].DeadlineMs != 0 || v[2].DeadlineMs == 0 {
		t.Fatalf("views of iad:3: %+v", v)
	}
	if rep.Differs() == "" {
		t.Fatal("no summary")
	}
	// MaxKeys bounds the list
	rep, err = manager.Verify(ctx, "test", regions, manager.VerifyOptions{ControlOptions: options(regions), MaxKeys: 1})
	if err != nil || len(rep.Keys) != 1 || !rep.Truncated {
		t.Fatalf("MaxKeys 1: %+v %v", rep, err)
	}

	// a region whose children do not answer fails the verification
	lone := testnats.Start(t, "lone")
	_, err = manager.Verify(ctx, "test", append(regions, manager.Region{ID: "lone", NATS: lone.URL()}), manager.VerifyOptions{ControlOptions: options(regions)})
	if !errors.Is(err, manager.ErrNoAnswer) || !strings.Contains(err.Error(), "region lone") {
		t.Fatalf("unanswered region: %v", err)
	}
}

func TestRecentConflicts(t *testing.T) {
	ctx := context.Background()
	cs, regions := startChildren(t, "fra", "sgp")
	// hold both channels so that the writes are concurrent
	var held []interface{ Resume() }
	for _, c := range cs {
		other := cs[0].id
		if c == cs[0] {
			other = cs[1].id
		}
		recv, ok := c.d.Node.Receiver(other)
		if !ok {
			t.Fatalf("no channel %s -> %s", other, c.id)
		}
		recv.Pause()
		held = append(held, recv)
	}
	for i, c := range cs {
		if err := c.app.Set(ctx, "color", []string{"red", "blue"}[i], 0).Err(); err != nil {
			t.Fatal(err)
		}
		if err := c.app.SAdd(ctx, "tags", c.id).Err(); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(50 * time.Millisecond)
	for _, r := range held {
		r.Resume()
	}
	converged(t, regions)
	rep, err := manager.RecentConflicts(ctx, "test", regions, 10, options(regions))
	if err != nil {
		t.Fatal(err)
	}
	// each region resolved the lww conflict on color once
	if rep.Totals["lww"] != 2 || rep.Counts["fra"]["lww"] != 1 || rep.Counts["sgp"]["lww"] != 1 || len(rep.Unreachable) != 0 {
		t.Fatalf("counts: %+v", rep)
	}
	if len(rep.Conflicts) != 2 {
		t.Fatalf("conflicts: %+v", rep.Conflicts)
	}
	seen := map[string]bool{}
	for i, c := range rep.Conflicts {
		seen[c.Region] = true
		if c.Key != "color" || c.Kind != "lww" || c.Winner == "" || c.Why == "" || len(c.Regions) != 2 {
			t.Fatalf("conflict %+v", c)
		}
		if i > 0 && c.Time.After(rep.Conflicts[i-1].Time) {
			t.Fatal("not newest first")
		}
	}
	if !seen["fra"] || !seen["sgp"] {
		t.Fatalf("regions %v", seen)
	}
	// both regions agree on the winner
	if rep.Conflicts[0].Winner != rep.Conflicts[1].Winner {
		t.Fatalf("winners differ: %+v", rep.Conflicts)
	}
	// limit
	if rep, err := manager.RecentConflicts(ctx, "test", regions, 1, options(regions)); err != nil || len(rep.Conflicts) != 1 {
		t.Fatalf("limit 1: %+v %v", rep, err)
	}
	// an unreachable region is reported, the others still answer
	rep, err = manager.RecentConflicts(ctx, "test", append(regions, manager.Region{ID: "gone", NATS: "nats://127.0.0.1:1"}), 10, options(regions))
	if !errors.Is(err, manager.ErrNoAnswer) || rep.Unreachable["gone"] == "" || len(rep.Conflicts) != 2 {
		t.Fatalf("unreachable: %+v %v", rep, err)
	}
}
