package bench

import (
	"context"
	"os"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
)

// clockTicks is USER_HZ, the unit of /proc/<pid>/stat's times; 100 on
// every Linux platform Go supports.
const clockTicks = 100

// procCPU returns the CPU seconds (user + system) a process used so far,
// -1 if unknown.
func procCPU(pid int) float64 {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return -1
	}
	// The command name (field 2) may hold spaces: fields count from its ')'.
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return -1
	}
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return -1
	}
	ut, err1 := strconv.ParseFloat(f[11], 64) // field 14: utime
	st, err2 := strconv.ParseFloat(f[12], 64) // field 15: stime
	if err1 != nil || err2 != nil {
		return -1
	}
	return (ut + st) / clockTicks
}

// redisPID returns the process id of the Redis behind c.
func redisPID(ctx context.Context, c *redis.Client) int {
	n, err := infoInt(ctx, c, "server", "process_id")
	if err != nil {
		return 0
	}
	return int(n)
}

// cpuMeter measures the CPU seconds of a set of processes over an interval.
type cpuMeter struct {
	pids  []int
	start []float64
}

func newCPUMeter(pids ...int) *cpuMeter {
	m := &cpuMeter{pids: pids}
	for _, p := range pids {
		m.start = append(m.start, procCPU(p))
	}
	return m
}

// used returns the CPU seconds each process used since newCPUMeter.
func (m *cpuMeter) used() []float64 {
	out := make([]float64, len(m.pids))
	for i, p := range m.pids {
		out[i] = procCPU(p) - m.start[i]
	}
	return out
}

// fcallStats returns the calls and microseconds Redis spent in FCALL so far
// (INFO commandstats).
func fcallStats(ctx context.Context, c *redis.Client) (calls, usec int64) {
	v, err := infoField(ctx, c, "commandstats", "cmdstat_fcall")
	if err != nil {
		return 0, 0
	}
	for _, kv := range strings.Split(v, ",") {
		k, val, _ := strings.Cut(kv, "=")
		n, _ := strconv.ParseInt(val, 10, 64)
		switch k {
		case "calls":
			calls = n
		case "usec":
			usec = n
		}
	}
	return calls, usec
}

// forks returns how many times the Redis forked (INFO stats total_forks):
// AOF rewrites and RDB saves, whose child competes for the cores and whose
// copy-on-write faults slow the main thread while it runs.
func forks(ctx context.Context, c *redis.Client) int64 {
	v, err := infoField(ctx, c, "stats", "total_forks")
	if err != nil {
		return 0
	}
	n, _ := strconv.ParseInt(v, 10, 64)
	return n
}
