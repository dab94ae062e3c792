package child

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/crdt"
)

// startChild runs a server with a real engine on a free port and returns a
// go-redis client of it.
func startChild(t *testing.T, region string) (*Engine, *redis.Client) {
	t.Helper()
	e := newTestEngine(t, region)
	return e, serve(t, e)
}

// serve runs a server of engine e on a free port until the test ends and
// returns a go-redis client of it.
func serve(t *testing.T, e *Engine) *redis.Client {
	t.Helper()
	srv, err := NewServer(Config{Addr: "127.0.0.1:0"}, e, zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.WarnLevel))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("server stopped with %v", err)
		}
	})
	c := redis.NewClient(&redis.Options{Addr: srv.Addr().String()})
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// toRESP turns an engine command of randomCmd into the Redis command an
// application sends for it.
func toRESP(a []string) []any {
	out := []any{}
	add := func(xs ...string) {
		for _, x := range xs {
			out = append(out, x)
		}
	}
	switch a[0] {
	case "set":
		add("SET", a[1], a[2])
		if a[3] == "1" {
			add("NX")
		}
		if a[4] == "1" {
			add("XX")
		}
		if a[5] == "1" {
			add("GET")
		}
		if a[6] == "1" {
			add("KEEPTTL")
		}
		if a[7] == "abs" {
			add("PXAT", a[8])
		}
	case "expire":
		add("PEXPIREAT", a[1], a[3])
		if a[4] != "" {
			add(a[4])
		}
	case "zadd":
		add("ZADD", a[1])
		for _, f := range a[2] {
			add(map[rune]string{'n': "NX", 'x': "XX", 'g': "GT", 'l': "LT", 'c': "CH", 'i': "INCR"}[f])
		}
		add(a[3:]...)
	default:
		add(a...)
	}
	return out
}

// TestEndpointDifferential: random command sequences sent through the
// child's RESP endpoint with go-redis, backed by a real redis-server, give
// the same replies and the same user-visible state as the crdt model.
func TestEndpointDifferential(t *testing.T) {
	ctx := context.Background()
	e, c := startChild(t, "sgp")
	n := 0
	for round := 0; round < 30; round++ {
		if err := e.rdb.FlushAll(ctx).Err(); err != nil {
			t.Fatal(err)
		}
		if err := e.MarkReady(ctx); err != nil { // a wiped Redis refuses writes until marked
			t.Fatal(err)
		}
		model := crdt.NewStore("sgp")
		r := rand.New(rand.NewPCG(uint64(round), 3))
		for i := 0; i < 60; i++ {
			now := time.Now().UnixMilli()
			cmd := randomCmd(r, now)
			args := toRESP(cmd.args)
			v, err := c.Do(ctx, args...).Result()
			got, gerr := replyString(v, err)
			if errors.Is(err, redis.Nil) {
				got, gerr = "<nil>", nil
			}
			want, _, werr := cmd.model(model, now)
			if (gerr != nil) != (werr != nil) || (gerr != nil && gerr.Error() != werr.Error()) || (gerr == nil && got != want) {
				t.Fatalf("round %d: %v: child %q %v, model %q %v", round, args, got, gerr, want, werr)
			}
			n++
		}
		sameSnapshot(t, fmt.Sprintf("round %d", round), redisSnapshot(t, e), model.Snapshot(time.Now().UnixMilli()))
	}
	t.Logf("%d commands compared", n)
}

// TestEndpointReads checks the read commands against what was written.
func TestEndpointReads(t *testing.T) {
	ctx := context.Background()
	_, c := startChild(t, "sgp")
	must := func(cmd *redis.Cmd) any {
		t.Helper()
		v, err := cmd.Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			t.Fatalf("%v: %v", cmd.Args(), err)
		}
		return v
	}
	for _, w := range [][]any{
		{"SET", "s", "hello"}, {"INCRBY", "n", "41"}, {"INCR", "n"}, {"HSET", "h", "a", "1", "b", "2"},
		{"SADD", "t", "x", "y", "z"}, {"ZADD", "z", "1", "a", "2", "b", "3", "c"}, {"PEXPIRE", "s", "100000"},
	} {
		must(c.Do(ctx, w...))
	}
	cases := []struct {
		cmd  []any
		want string
	}{
		{[]any{"GET", "s"}, "hello"},
		{[]any{"MGET", "s", "n", "h", "nope"}, "[hello 42 <nil> <nil>]"},
		{[]any{"STRLEN", "s"}, "5"},
		{[]any{"GETRANGE", "s", "1", "-2"}, "ell"},
		{[]any{"TYPE", "h"}, "hash"},
		{[]any{"EXISTS", "s", "n", "nope"}, "2"},
		{[]any{"DBSIZE"}, "5"},
		{[]any{"HGET", "h", "a"}, "1"},
		{[]any{"HLEN", "h"}, "2"},
		{[]any{"SCARD", "t"}, "3"},
		{[]any{"SISMEMBER", "t", "y"}, "1"},
		{[]any{"ZSCORE", "z", "b"}, "2"},
		{[]any{"ZRANGE", "z", "0", "-1", "WITHSCORES"}, "[a 1 b 2 c 3]"},
		{[]any{"ZRANGE", "z", "(1", "+inf", "BYSCORE", "LIMIT", "0", "1"}, "[b]"},
		{[]any{"ZREVRANK", "z", "a"}, "2"},
		{[]any{"ZCOUNT", "z", "2", "3"}, "2"},
	}
	for _, tc := range cases {
		v := must(c.Do(ctx, tc.cmd...))
		if got := fmt.Sprint(v); got != tc.want {
			t.Errorf("%v = %s, want %s", tc.cmd, got, tc.want)
		}
	}
	if ttl := must(c.Do(ctx, "PTTL", "s")).(int64); ttl <= 0 || ttl > 100000 {
		t.Errorf("PTTL s = %d", ttl)
	}
	keys, _, err := c.Scan(ctx, 0, "*", 100).Result()
	if err != nil || len(keys) != 5 {
		t.Errorf("SCAN: %v %v: only user keys may show", keys, err)
	}
	if v := must(c.Do(ctx, "SCAN", "0", "TYPE", "zset")); fmt.Sprint(v) != "[0 [z]]" {
		t.Errorf("SCAN TYPE zset = %v", v)
	}
	if err := c.Do(ctx, "INCR", "s").Err(); err == nil || err.Error() != crdt.ErrNotInteger.Error() {
		t.Errorf("INCR on a string: %v", err)
	}
	if err := c.Do(ctx, "HSET", "s", "f", "v").Err(); err == nil || err.Error() != crdt.ErrWrongType.Error() {
		t.Errorf("HSET on a string: %v", err)
	}
	if err := c.Do(ctx, "SET", "k", "v", "EX", "0").Err(); err == nil || err.Error() != "ERR invalid expire time in 'set' command" {
		t.Errorf("SET EX 0: %v", err)
	}
	if err := c.Do(ctx, "ZADD", "z", "NX", "XX", "1", "a").Err(); err == nil || err.Error() != errZNXXX.Error() {
		t.Errorf("ZADD NX XX: %v", err)
	}
	if v := must(c.Do(ctx, "SET", "s", "new", "NX")); v != nil {
		t.Errorf("SET NX on an existing key = %v", v)
	}
	if v := must(c.Do(ctx, "SETNX", "fresh", "1")); v != int64(1) {
		t.Errorf("SETNX = %v", v)
	}
	if v := strconv.Quote(fmt.Sprint(must(c.Do(ctx, "INCRBYFLOAT", "f", "0.1")))); v != `"0.1"` {
		t.Errorf("INCRBYFLOAT = %s", v)
	}
}
