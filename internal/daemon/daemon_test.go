package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/channel"
	"github.com/globalreplica/globalreplica/internal/testnats"
	"github.com/globalreplica/globalreplica/internal/testredis"
)

type region struct {
	name string
	nats *testnats.Server
	d    *Daemon
	c    *redis.Client
	stop context.CancelFunc
	done chan error
}

// startRegions runs two or more region children whose NATS servers require
// credentials, each with its own redis-server.
func startRegions(t *testing.T, names ...string) []*region {
	t.Helper()
	rs := make([]*region, len(names))
	for i, n := range names {
		rs[i] = &region{name: n, nats: testnats.StartAuth(t, n, "gr-"+n, "secret-"+n)}
	}
	for _, r := range rs {
		var peers []Peer
		for _, o := range rs {
			if o != r {
				peers = append(peers, Peer{Region: o.name, NATS: NATS{URL: o.nats.URL(), User: "gr-" + o.name, Password: "secret-" + o.name}})
			}
		}
		rd := testredis.Start(t)
		d, err := Start(context.Background(), Config{
			Instance: "test", Region: r.name, Listen: "127.0.0.1:0", HTTP: "127.0.0.1:0",
			Redis: *rd.Options(), NATS: NATS{URL: r.nats.URL(), User: "gr-" + r.name, Password: "secret-" + r.name},
			Peers: peers, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
		})
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		r.d, r.stop, r.done = d, cancel, make(chan error, 1)
		go func() { r.done <- d.Run(ctx) }()
		r.c = redis.NewClient(&redis.Options{Addr: d.RESPAddr()})
		t.Cleanup(func() {
			_ = r.c.Close()
			r.stop()
			if err := <-r.done; err != nil {
				t.Errorf("%s stopped with %v", r.name, err)
			}
		})
	}
	return rs
}

func waitValue(t *testing.T, c *redis.Client, key, want string) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		v, _ := c.Get(context.Background(), key).Result()
		if v == want {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %s = %q, want %q", c.Options().Addr, key, v, want)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestAuthenticatedChannels: channels reach NATS servers that require
// credentials, writes flow both ways, and the HTTP endpoint shows status,
// pauses and resumes a channel and serves metrics.
func TestAuthenticatedChannels(t *testing.T) {
	rs := startRegions(t, "sgp", "fra")
	sgp, fra := rs[0], rs[1]
	ctx := context.Background()
	if err := sgp.c.IncrBy(ctx, "n", 2).Err(); err != nil {
		t.Fatal(err)
	}
	if err := fra.c.IncrBy(ctx, "n", 3).Err(); err != nil {
		t.Fatal(err)
	}
	waitValue(t, sgp.c, "n", "5")
	waitValue(t, fra.c, "n", "5")

	get := func(path string, out any) {
		t.Helper()
		resp, err := http.Get("http://" + fra.d.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("GET %s: %s", path, resp.Status)
		}
		if s, ok := out.(*string); ok {
			b, _ := io.ReadAll(resp.Body)
			*s = string(b)
			return
		}
		if err := json.NewDecoder(resp.Body).Decode(out); err != nil {
			t.Fatal(err)
		}
	}
	post := func(path string) int {
		t.Helper()
		resp, err := http.Post("http://"+fra.d.HTTPAddr()+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		_ = resp.Body.Close()
		return resp.StatusCode
	}
	var sts []channel.Status
	get("/channels", &sts)
	if len(sts) != 1 || sts[0].Origin != "sgp" || sts[0].AppliedSeq != 1 || sts[0].State != channel.StateRunning {
		t.Fatalf("/channels = %+v", sts)
	}
	if code := post("/channels/sgp/pause"); code != http.StatusOK {
		t.Fatalf("pause: %d", code)
	}
	if err := sgp.c.Set(ctx, "k", "while-paused", 0).Err(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(300 * time.Millisecond)
	if v, _ := fra.c.Get(ctx, "k").Result(); v != "" {
		t.Fatalf("a paused channel applied k=%q", v)
	}
	if code := post("/channels/sgp/resume"); code != http.StatusOK {
		t.Fatalf("resume: %d", code)
	}
	waitValue(t, fra.c, "k", "while-paused")
	if code := post("/channels/nowhere/pause"); code != http.StatusNotFound {
		t.Fatalf("pause of an unknown channel: %d", code)
	}
	if code := post("/channels/sgp/throttle?ops=-1"); code != http.StatusBadRequest {
		t.Fatalf("negative throttle: %d", code)
	}
	var metrics string
	get("/metrics", &metrics)
	for _, m := range []string{`gr_channel_applied_seq{dest="fra",origin="sgp"} 2`, `gr_shipper_last_seq{region="fra"} 1`} {
		if !strings.Contains(metrics, m) {
			t.Fatalf("metrics lack %s", m)
		}
	}
}

// TestWrongCredentialsAreLoud: a peer's NATS that refuses the credentials
// shows as a channel error, and the region keeps serving its clients.
func TestWrongCredentialsAreLoud(t *testing.T) {
	n := testnats.StartAuth(t, "fra", "gr-fra", "right")
	own := testnats.Start(t, "sgp")
	rd := testredis.Start(t)
	d, err := Start(context.Background(), Config{
		Instance: "test", Region: "sgp", Listen: "127.0.0.1:0",
		Redis: *rd.Options(), NATS: NATS{URL: own.URL()},
		Peers: []Peer{{Region: "fra", NATS: NATS{URL: n.URL(), User: "gr-fra", Password: "wrong"}}},
		Log:   zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("daemon stopped with %v", err)
		}
	}()
	c := redis.NewClient(&redis.Options{Addr: d.RESPAddr()})
	defer func() { _ = c.Close() }()
	if err := c.Set(context.Background(), "k", "v", 0).Err(); err != nil {
		t.Fatalf("the region must keep serving: %v", err)
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		st := d.Statuses()
		if len(st) == 1 && st[0].State == channel.StateError && st[0].LastError != "" {
			t.Logf("channel fra->sgp: %s", st[0].LastError)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no channel error shown: %+v", st)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestInfoActiveActive: INFO shows the user keyspace and the active-active
// state, channels included.
func TestInfoActiveActive(t *testing.T) {
	rs := startRegions(t, "sgp", "fra")
	ctx := context.Background()
	if err := rs[0].c.Set(ctx, "a", "1", 0).Err(); err != nil {
		t.Fatal(err)
	}
	waitValue(t, rs[1].c, "a", "1")
	info, err := rs[1].c.Info(ctx, "activeactive", "keyspace").Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# ActiveActive", "region:fra", "instance:test", "applied_sgp:1", "channel_sgp:state=running,applied_seq=1", "db0:keys=1,"} {
		if !strings.Contains(info, want) {
			t.Fatalf("INFO lacks %q:\n%s", want, info)
		}
	}
}

// TestWipedRegionRecovers: a region's Redis loses everything while its
// child runs. Writes are refused (TRYAGAIN) until the child has raised the
// sequence past its stream and merged its own ops back; its channels start
// over from the empty applied vector and replay the peers' streams; the
// region converges with no OpID issued twice.
func TestWipedRegionRecovers(t *testing.T) {
	rs := startRegions(t, "sgp", "fra")
	sgp, fra := rs[0], rs[1]
	ctx := context.Background()
	for i := 0; i < 20; i++ {
		if err := sgp.c.IncrBy(ctx, "n", 1).Err(); err != nil {
			t.Fatal(err)
		}
		if err := fra.c.HSet(ctx, "h", fmt.Sprintf("f%d", i), i).Err(); err != nil {
			t.Fatal(err)
		}
	}
	waitValue(t, fra.c, "n", "20")
	before, _ := sgp.d.Engine.Position(ctx)
	// wipe sgp's Redis behind the child's back
	raw := redis.NewClient(&redis.Options{Addr: sgp.d.cfg.Redis.Addr})
	defer func() { _ = raw.Close() }()
	if err := raw.FlushAll(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		err := sgp.c.IncrBy(ctx, "n", 1).Err()
		if err == nil {
			break
		}
		if !strings.HasPrefix(err.Error(), "TRYAGAIN") || time.Now().After(deadline) {
			t.Fatalf("write to the wiped region: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	after, _ := sgp.d.Engine.Position(ctx)
	if after.Seq != before.Seq+1 {
		t.Fatalf("sgp's sequence after the wipe: %d, want %d (no OpID twice)", after.Seq, before.Seq+1)
	}
	waitValue(t, sgp.c, "n", "21")
	waitValue(t, fra.c, "n", "21")
	deadline = time.Now().Add(20 * time.Second)
	for {
		n, _ := sgp.c.HLen(ctx, "h").Result()
		if n == 20 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sgp has %d of fra's 20 hash fields after the wipe", n)
		}
		time.Sleep(50 * time.Millisecond)
	}
}
