package redisproc

import (
	"context"
	"testing"

	"github.com/redis/go-redis/v9"
)

// StartT starts a redis-server for a test in a temporary folder and stops
// it when the test ends. A missing redis-server fails the test: it never
// skips.
func StartT(t testing.TB, o Options) (*Proc, *redis.Client) {
	t.Helper()
	if o.Dir == "" {
		o.Dir = t.TempDir()
	}
	p, err := Start(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	c := p.Client()
	t.Cleanup(func() { _ = c.Close(); p.Stop() })
	return p, c
}
