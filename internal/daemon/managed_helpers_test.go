package daemon

import (
	"context"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/internal/testnats"
)

// startManagedOn starts a child of region name on the region's NATS ns
// (credentials gr/secret) and the Redis of opts, connected to the config
// store at mgr. Several children of one region share ns and opts.
func startManagedOn(t *testing.T, mgr *testnats.Server, name string, ns *testnats.Server, opts redis.Options) *managedRegion {
	t.Helper()
	r := &managedRegion{name: name, nats: ns}
	creds := NATS{User: "gr", Password: "secret"}
	own, man := creds, creds
	own.URL, man.URL = r.nats.URL(), mgr.URL()
	d, err := Start(context.Background(), Config{
		Instance: "shop", Region: name, Listen: "127.0.0.1:0",
		Redis: opts, NATS: own,
		Manager: ManagerConfig{NATS: man, Heartbeat: 100 * time.Millisecond, Retry: 100 * time.Millisecond},
		Log:     zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- d.Run(ctx) }()
	r.d = d
	r.c = redis.NewClient(&redis.Options{Addr: d.RESPAddr()})
	t.Cleanup(func() {
		_ = r.c.Close()
		cancel()
		if err := <-done; err != nil {
			t.Errorf("%s stopped with %v", name, err)
		}
	})
	return r
}
