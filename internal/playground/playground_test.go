package playground

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/manager"
)

// freePortBase finds n consecutive free ports on 127.0.0.1.
func freePortBase(t *testing.T, n int) int {
	t.Helper()
	for base := 20000 + int(time.Now().UnixNano()%20000); base < 65000; base += n + 7 {
		ok := true
		for i := 0; i < n && ok; i++ {
			l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", base+i))
			if err != nil {
				ok = false
				continue
			}
			_ = l.Close()
		}
		if ok {
			return base
		}
	}
	t.Fatal("no free port range")
	return 0
}

// TestPlayground starts the playground as `go tool task demo` does and uses
// it as a newcomer would: one line per region, a write in one region shows
// in the others.
func TestPlayground(t *testing.T) { runPlayground(t, false) }

// TestPlaygroundEmbeddedRedis: the fallback for machines without
// redis-server, the embedded development-only Redis, runs the same engine
// and says so.
func TestPlaygroundEmbeddedRedis(t *testing.T) { runPlayground(t, true) }

func runPlayground(t *testing.T, embedded bool) {
	t.Helper()
	base := freePortBase(t, 4)
	ctx, cancel := context.WithCancel(context.Background())
	p, err := Start(ctx, Config{Regions: 4, PortBase: base, EmbeddedRedis: embedded, Log: zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel)})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("playground stopped with %v", err)
		}
	}()
	var out bytes.Buffer
	p.Describe(&out)
	lines := regexp.MustCompile(`(?m)^region ([a-z]+) redis://127\.0\.0\.1:(\d+)$`).FindAllStringSubmatch(out.String(), -1)
	if len(lines) != 4 {
		t.Fatalf("want 4 region lines, got:\n%s", out.String())
	}
	if embedded != strings.Contains(out.String(), "FOR DEVELOPMENT ONLY") {
		t.Fatalf("embedded=%v but the output says:\n%s", embedded, out.String())
	}
	for i, l := range lines {
		if l[2] != fmt.Sprint(base+i) {
			t.Fatalf("region %d listens on %s, want %d", i, l[2], base+i)
		}
	}
	mgr := regexp.MustCompile(`(?m)^manager (nats://127\.0\.0\.1:\d+)$`).FindStringSubmatch(out.String())
	if mgr == nil {
		t.Fatalf("no manager line in:\n%s", out.String())
	}
	checkManager(t, mgr[1], len(lines))
	clients := make([]*redis.Client, len(p.Regions))
	for i, r := range p.Regions {
		clients[i] = redis.NewClient(&redis.Options{Addr: r.Addr})
		defer func() { _ = clients[i].Close() }()
	}
	bg := context.Background()
	if err := clients[0].Set(bg, "greeting", "hello", 0).Err(); err != nil {
		t.Fatal(err)
	}
	for i, c := range clients {
		if err := c.IncrBy(bg, "visits", int64(i+1)).Err(); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(20 * time.Second)
	for _, c := range clients {
		for {
			g, _ := c.Get(bg, "greeting").Result()
			v, _ := c.Get(bg, "visits").Result()
			if g == "hello" && v == "10" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: greeting=%q visits=%q, want hello and 10", c.Options().Addr, g, v)
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
}

// checkManager reaches the config store at the printed URL as
// `channel-manager --nats <url> channel status` does, and waits until the
// n*(n-1) channels of the playground all run.
func checkManager(t *testing.T, url string, n int) {
	t.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	s, err := manager.Bind(ctx, js, "demo")
	if err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		st, err := s.Status(ctx, time.Now())
		if err != nil {
			t.Fatal(err)
		}
		running := 0
		for _, c := range st {
			if c.State == "running" {
				running++
			}
		}
		if len(st) == n*(n-1) && running == len(st) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("channel status at %s: %d channels, %d running, want %d running: %+v", url, len(st), running, n*(n-1), st)
		}
		time.Sleep(200 * time.Millisecond)
	}
}
