package regional_test

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/internal/daemon"
	"github.com/globalreplica/globalreplica/internal/testnats"
	"github.com/globalreplica/globalreplica/internal/testredis"
	"github.com/globalreplica/globalreplica/regional"
)

// testRegion is one region of a test: a real redis-server, an embedded NATS
// server with JetStream and a child daemon whose RESP and HTTP addresses
// stay the same across stop and start.
type testRegion struct {
	name   string
	nats   *testnats.Server
	redis  *testredis.Server
	peers  []daemon.Peer
	resp   string
	http   string
	direct *redis.Client // to the child's RESP endpoint

	d      *daemon.Daemon
	cancel context.CancelFunc
	done   chan error
}

// startRegions starts regions with channels between every pair.
func startRegions(t *testing.T, names ...string) []*testRegion {
	t.Helper()
	rs := make([]*testRegion, len(names))
	for i, n := range names {
		rs[i] = &testRegion{name: n, nats: testnats.Start(t, n), redis: testredis.Start(t), resp: "127.0.0.1:0", http: "127.0.0.1:0"}
	}
	for _, r := range rs {
		for _, o := range rs {
			if o != r {
				r.peers = append(r.peers, daemon.Peer{Region: o.name, NATS: daemon.NATS{URL: o.nats.URL()}})
			}
		}
		r.start(t)
		r.resp, r.http = r.d.RESPAddr(), r.d.HTTPAddr()
		r.direct = redis.NewClient(&redis.Options{Addr: r.resp, MaxRetries: -1})
		t.Cleanup(func() {
			_ = r.direct.Close()
			r.stop(t)
		})
	}
	return rs
}

// start runs the region's child.
func (r *testRegion) start(t *testing.T) {
	t.Helper()
	d, err := daemon.Start(context.Background(), daemon.Config{
		Instance: "test", Region: r.name, Listen: r.resp, HTTP: r.http,
		Redis: *r.redis.Options(), NATS: daemon.NATS{URL: r.nats.URL()}, Peers: r.peers,
		Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel),
	})
	if err != nil {
		t.Fatalf("start %s: %v", r.name, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r.d, r.cancel, r.done = d, cancel, make(chan error, 1)
	go func() { r.done <- d.Run(ctx) }()
}

// stop stops the region's child (its Redis and NATS keep running).
func (r *testRegion) stop(t *testing.T) {
	t.Helper()
	if r.cancel == nil {
		return
	}
	r.cancel()
	if err := <-r.done; err != nil {
		t.Errorf("%s stopped with %v", r.name, err)
	}
	r.cancel = nil
}

// region returns the client config of r.
func (r *testRegion) region() regional.Region {
	return regional.Region{Name: r.name, Addr: r.resp, HTTP: r.http}
}

// events collects a client's events.
type events struct {
	mu  sync.Mutex
	evs []regional.Event
	t   *testing.T
}

func (e *events) add(ev regional.Event) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.evs = append(e.evs, ev)
	e.t.Log("event:", ev)
}

// wait returns the last event of kind about name once there is one, or
// fails the test after timeout.
func (e *events) wait(kind regional.EventKind, name string, timeout time.Duration) regional.Event {
	e.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		if ev, ok := e.find(kind, name); ok {
			return ev
		}
		if time.Now().After(deadline) {
			e.t.Fatalf("no %s event for %s within %s; events: %v", kind, name, timeout, e.all())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// find returns the last event of kind about name (Region, or To for moves).
func (e *events) find(kind regional.EventKind, name string) (regional.Event, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i := len(e.evs) - 1; i >= 0; i-- {
		ev := e.evs[i]
		if ev.Kind == kind && (ev.Region == name || ev.To == name) {
			return ev, true
		}
	}
	return regional.Event{}, false
}

func (e *events) all() []regional.Event {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]regional.Event(nil), e.evs...)
}

// waitHTTP polls GET url until it answers code.
func waitHTTP(t *testing.T, url string, code int) {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		resp, err := http.Get(url)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == code {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: never %d (last %v, %v)", url, code, resp, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// waitKeys waits until every key holds its value in c.
func waitKeys(t *testing.T, c *redis.Client, name string, want map[string]string) {
	t.Helper()
	keys := make([]string, 0, len(want))
	for k := range want {
		keys = append(keys, k)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		var missing []string
		for i := 0; i < len(keys); i += 500 {
			batch := keys[i:min(i+500, len(keys))]
			vals, err := c.MGet(context.Background(), batch...).Result()
			if err != nil {
				missing = append(missing, fmt.Sprintf("MGET: %v", err))
				break
			}
			for j, v := range vals {
				if s, _ := v.(string); s != want[batch[j]] {
					missing = append(missing, batch[j])
				}
			}
		}
		if len(missing) == 0 {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %d of %d acknowledged writes missing, e.g. %v", name, len(missing), len(keys), missing[:min(5, len(missing))])
		}
		time.Sleep(100 * time.Millisecond)
	}
}
