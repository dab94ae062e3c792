package child

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/internal/testredis"
)

// BenchmarkLuaCost measures Redis's own time per op inside the engine's
// functions (INFO commandstats, FCALL usec / ops), which depends far less
// on other load on the machine than wall-clock throughput does. It reports
// redis-us/op: for write/* the local write path (gr_write, 100 commands per
// call, as the endpoint groups concurrent writes), for apply/* the remote
// apply path (gr_apply, batches of 1000 ops of one origin, as a channel
// catching up). Run with a fixed count, for example
//
//	go test -run '^$' -bench LuaCost -benchtime 20000x ./child
//
// With GR_LUA_BASE set to a folder holding other versions of lib.lua,
// write.lua and apply.lua, the benchmark loads those instead: a way to
// compare two versions of the scripts at the same machine load. With
// GR_LUACOST_AOF set, Redis runs with its append-only file on, as a
// region's Redis does; GR_LUACOST_GROUP sets the writes per gr_write call
// (default 100).
func BenchmarkLuaCost(b *testing.B) {
	if dir := os.Getenv("GR_LUA_BASE"); dir != "" {
		read := func(name string) string {
			s, err := os.ReadFile(filepath.Join(dir, name))
			if err != nil {
				b.Fatal(err)
			}
			return string(s)
		}
		saved := library
		library = "#!lua name=globalreplica\n" + read("lib.lua") + read("write.lua") + read("apply.lua") + luaRestore + luaGC + luaRegister
		b.Cleanup(func() { library = saved })
	}
	// Each workload makes the i-th command; keys repeat so that most
	// writes meet existing state, as redis-benchmark -r 100000 does.
	workloads := []struct {
		name string
		cmd  func(i int) []string
	}{
		{"set", func(i int) []string {
			return []string{"set", fmt.Sprintf("key:%012d", i%10000), "xxx", "0", "0", "0", "0", "", "0"}
		}},
		{"incr", func(i int) []string { return []string{"incrby", fmt.Sprintf("ctr:%012d", i%10000), "1"} }},
		{"hset", func(i int) []string {
			return []string{"hset", fmt.Sprintf("h:%d", i%1000), "f" + strconv.Itoa(i%10), "v" + strconv.Itoa(i)}
		}},
		{"sadd", func(i int) []string { return []string{"sadd", fmt.Sprintf("s:%d", i%1000), "m" + strconv.Itoa(i%10)} }},
		{"zadd", func(i int) []string {
			return []string{"zadd", fmt.Sprintf("z:%d", i%1000), "", strconv.Itoa(i), "m" + strconv.Itoa(i%10)}
		}},
		{"set-ex", func(i int) []string {
			return []string{"set", fmt.Sprintf("t:%d", i%10000), "v", "0", "0", "0", "0", "rel", "600000"}
		}},
	}
	for _, w := range workloads {
		b.Run("write/"+w.name, func(b *testing.B) {
			e := costEngine(b, "sgp")
			b.ResetTimer()
			us, cpu := luaCost(b, e.rdb, func() {
				writeN(b, e, b.N, w.cmd)
			})
			b.ReportMetric(us/float64(b.N), "redis-us/op")
			b.ReportMetric(cpu/float64(b.N), "redis-cpu-us/op")
		})
		b.Run("apply/"+w.name, func(b *testing.B) {
			ctx := context.Background()
			src := costEngine(b, "sgp")
			dst := costEngine(b, "fra")
			writeN(b, src, b.N, w.cmd)
			ops, err := src.ReadLog(ctx, int64(b.N))
			if err != nil {
				b.Fatal(err)
			}
			if len(ops) != b.N {
				b.Fatalf("op log holds %d ops, want %d", len(ops), b.N)
			}
			b.ResetTimer()
			us, cpu := luaCost(b, dst.rdb, func() {
				for i := 0; i < len(ops); i += 1000 {
					if _, err := dst.Apply(ctx, "sgp", ops[i:min(i+1000, len(ops))]); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.ReportMetric(us/float64(b.N), "redis-us/op")
			b.ReportMetric(cpu/float64(b.N), "redis-cpu-us/op")
		})
	}
}

func costEngine(b *testing.B, region string) *Engine {
	b.Helper()
	ctx := context.Background()
	var opts []testredis.Option
	if os.Getenv("GR_LUACOST_AOF") != "" {
		opts = append(opts, testredis.WithAppendOnly()) // as a region's Redis runs
	}
	e, err := NewEngine(ctx, EngineConfig{Instance: "b", Region: region}, testredis.Start(b, opts...).Client(), zerolog.Nop())
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = e.Close() })
	if err := e.MarkReady(ctx); err != nil {
		b.Fatal(err)
	}
	return e
}

// writeN writes n commands in calls of GR_LUACOST_GROUP commands (default
// 100; the endpoint's calls hold as many writes as arrived together, a few
// to a few dozen).
func writeN(b *testing.B, e *Engine, n int, cmd func(int) []string) {
	b.Helper()
	ctx := context.Background()
	group := 100
	if g := os.Getenv("GR_LUACOST_GROUP"); g != "" {
		var err error
		if group, err = strconv.Atoi(g); err != nil || group < 1 {
			b.Fatalf("GR_LUACOST_GROUP=%q: want a positive integer", g)
		}
	}
	for i := 0; i < n; i += group {
		cmds := make([][]string, 0, group)
		for j := i; j < min(i+group, n); j++ {
			cmds = append(cmds, cmd(j))
		}
		_, errs := e.WritePipeline(ctx, cmds)
		for _, err := range errs {
			if err != nil {
				b.Fatal(err)
			}
		}
	}
}

// luaCost runs f and returns the microseconds Redis spent in FCALL
// meanwhile (INFO commandstats: time in the calls, which grows when the
// machine is busy and Redis waits for a core) and the CPU microseconds of
// Redis's main thread (INFO cpu: FCALL and the network work around it).
func luaCost(b *testing.B, c *redis.Client, f func()) (us, cpu float64) {
	b.Helper()
	us0, cpu0 := redisCost(b, c)
	f()
	us1, cpu1 := redisCost(b, c)
	return us1 - us0, cpu1 - cpu0
}

func redisCost(b *testing.B, c *redis.Client) (us, cpu float64) {
	b.Helper()
	s, err := c.Info(context.Background(), "commandstats", "cpu").Result()
	if err != nil {
		b.Fatal(err)
	}
	for _, line := range strings.Split(s, "\n") {
		line = strings.TrimSpace(line)
		if rest, ok := strings.CutPrefix(line, "cmdstat_fcall:"); ok {
			for _, kv := range strings.Split(rest, ",") {
				if v, ok := strings.CutPrefix(kv, "usec="); ok {
					us, _ = strconv.ParseFloat(v, 64)
				}
			}
		}
		for _, k := range []string{"used_cpu_user_main_thread:", "used_cpu_sys_main_thread:"} {
			if v, ok := strings.CutPrefix(line, k); ok {
				f, _ := strconv.ParseFloat(v, 64)
				cpu += f * 1e6
			}
		}
	}
	return us, cpu
}
