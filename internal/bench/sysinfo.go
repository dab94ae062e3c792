package bench

import (
	"bufio"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"time"
)

// Machine describes where a run took place.
type Machine struct {
	Date         string  `json:"date"`
	NProc        int     `json:"nproc"`
	CPUModel     string  `json:"cpu_model"`
	MemTotalGiB  float64 `json:"mem_total_gib"`
	Kernel       string  `json:"kernel"`
	GoVersion    string  `json:"go_version"`
	RedisVersion string  `json:"redis_version"`
	LoadStart    string  `json:"load_avg_start"` // 1, 5 and 15 minute load averages
	LoadEnd      string  `json:"load_avg_end,omitempty"`
}

// DescribeMachine reads the machine's description from /proc and the
// installed tools.
func DescribeMachine() Machine {
	m := Machine{
		Date:      time.Now().Format("2006-01-02 15:04:05 MST"),
		NProc:     runtime.NumCPU(),
		GoVersion: runtime.Version(),
		LoadStart: LoadAvg(),
	}
	m.CPUModel = procField("/proc/cpuinfo", "model name")
	if kb := procField("/proc/meminfo", "MemTotal"); kb != "" {
		n, _ := strconv.ParseFloat(strings.Fields(kb)[0], 64)
		m.MemTotalGiB = float64(int(n/(1<<20)*10+0.5)) / 10
	}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}
	if out, err := exec.Command("redis-server", "--version").Output(); err == nil {
		m.RedisVersion = strings.TrimSpace(string(out))
	}
	return m
}

// LoadAvg returns the 1, 5 and 15 minute load averages, "" if unknown.
func LoadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}
	return strings.Join(f[:3], " ")
}

// Load1 returns the 1 minute load average, -1 if unknown.
func Load1() float64 {
	f := strings.Fields(LoadAvg())
	if len(f) == 0 {
		return -1
	}
	v, err := strconv.ParseFloat(f[0], 64)
	if err != nil {
		return -1
	}
	return v
}

// procField returns the value of the first "name : value" line of a /proc file.
func procField(path, name string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer func() { _ = f.Close() }()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, ok := strings.Cut(sc.Text(), ":")
		if ok && strings.TrimSpace(k) == name {
			return strings.TrimSpace(v)
		}
	}
	return ""
}
