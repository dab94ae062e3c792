package main

import (
	"bytes"
	"context"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/spf13/pflag"

	"github.com/globalreplica/globalreplica/internal/testredis"
)

func envOf(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func resolve(t *testing.T, args []string, env map[string]string) (config, error) {
	t.Helper()
	fs := pflag.NewFlagSet("child", pflag.ContinueOnError)
	addFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return resolveConfig(fs, envOf(env))
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestConfigPrecedence(t *testing.T) {
	yml := writeFile(t, "child.yaml", "instance: shop\nregion: fra\nlisten: 0.0.0.0:7000\nredis: 10.0.0.5:6379\nmax-value-bytes: 16mb\nlog-level: debug\npassword: from-file\n")
	// The file alone, over the defaults.
	c, err := resolve(t, []string{"--config", yml}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := config{Instance: "shop", Region: "fra", Listen: "0.0.0.0:7000", Redis: "10.0.0.5:6379", Password: "from-file",
		MaxValueBytes: 16 << 20, LogLevel: zerolog.DebugLevel, HTTP: "127.0.0.1:9121", Retention: 168 * time.Hour, GCEvery: time.Minute}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("file: %+v, want %+v", c, want)
	}
	// The environment beats the file (found through $GR_CONFIG); flags beat both.
	env := map[string]string{"GR_CONFIG": yml, "GR_REGION": "iad", "GR_LISTEN": "127.0.0.1:7001", "GR_REDIS_PASSWORD": "rp", "GR_MAX_VALUE_BYTES": "1000"}
	c, err = resolve(t, []string{"--listen", "127.0.0.1:7002", "--log-level", "WARN", "--gc-every", "10m"}, env)
	if err != nil {
		t.Fatal(err)
	}
	want = config{Instance: "shop", Region: "iad", Listen: "127.0.0.1:7002", Redis: "10.0.0.5:6379", RedisPassword: "rp",
		Password: "from-file", MaxValueBytes: 1000, LogLevel: zerolog.WarnLevel, HTTP: "127.0.0.1:9121", Retention: 168 * time.Hour, GCEvery: 10 * time.Minute}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("env and flags: %+v, want %+v", c, want)
	}
	// Defaults.
	c, err = resolve(t, []string{"--instance", "shop", "--region", "sgp"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	want = config{Instance: "shop", Region: "sgp", Listen: "127.0.0.1:6380", Redis: "127.0.0.1:6379", MaxValueBytes: 64 << 20, LogLevel: zerolog.InfoLevel, HTTP: "127.0.0.1:9121", Retention: 168 * time.Hour, GCEvery: time.Minute}
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("defaults: %+v, want %+v", c, want)
	}
	// The collection spacing reaches the daemon with the config store.
	if mc := managerConfig(config{Manager: "nats://127.0.0.1:4222", GCEvery: 5 * time.Minute}); mc.GCEvery != 5*time.Minute || mc.NATS.URL != "nats://127.0.0.1:4222" {
		t.Fatalf("manager config %+v", mc)
	}
	// JSON, with a number.
	js := writeFile(t, "child.json", `{"instance": "shop", "region": "fra", "max-value-bytes": 2048}`)
	if c, err := resolve(t, []string{"--config", js}, nil); err != nil || c.MaxValueBytes != 2048 {
		t.Fatalf("json: %+v, %v", c, err)
	}
}

func TestConfigErrors(t *testing.T) {
	dir := t.TempDir()
	bad := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		args []string
		env  map[string]string
		want string
	}{
		{nil, nil, "the instance name is required"},
		{[]string{"--instance", "shop"}, nil, "the region is required"},
		{[]string{"--instance", "Shop", "--region", "fra"}, nil, `invalid instance name "Shop"`},
		{[]string{"--instance", "shop", "--region", "FRA"}, nil, `invalid region "FRA"`},
		{[]string{"--instance", "shop"}, map[string]string{"GR_REGION": "f r a"}, `invalid region "f r a"`},
		{[]string{"--instance", "shop", "--region", "fra", "--max-value-bytes", "lots"}, nil, `max-value-bytes (from --max-value-bytes): invalid size "lots"`},
		{[]string{"--instance", "shop", "--region", "fra"}, map[string]string{"GR_LOG_LEVEL": "loud"}, `log-level (from $GR_LOG_LEVEL): unknown log level "loud"`},
		{[]string{"--instance", "shop", "--region", "fra", "--gc-every", "0s"}, nil, `gc-every (from --gc-every): gc-every "0s": a positive duration like 1m`},
		{[]string{"--config", bad("a.yaml", "instance: shop\nregoin: fra\n")}, nil, "unknown keys regoin"},
		{[]string{"--config", bad("a.toml", "")}, nil, "must end in .json, .yaml or .yml"},
		{[]string{"--config", bad("b.json", "{")}, nil, "config file"},
		{[]string{"--config", filepath.Join(dir, "missing.yaml")}, nil, "reading the config file"},
		{[]string{"--nope"}, nil, "unknown flag: --nope"},
		{[]string{"extra"}, nil, `unexpected argument "extra"`},
	} {
		var stdout, stderr bytes.Buffer
		code := run(context.Background(), tc.args, &stdout, &stderr, envOf(tc.env))
		if code != exitUsage || !strings.Contains(stderr.String(), tc.want) || !strings.HasPrefix(stderr.String(), "child: ") {
			t.Errorf("%v %v: exit %d, stderr %q; want exit 2 and %q", tc.args, tc.env, code, stderr.String(), tc.want)
		}
	}
}

func TestParseSize(t *testing.T) {
	for in, want := range map[string]int{"0": 0, "1024": 1024, "1k": 1000, "1kb": 1024, "64MB": 64 << 20, "1gb": 1 << 30, "5b": 5} {
		if got, err := parseSize(in); err != nil || got != want {
			t.Errorf("parseSize(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "x", "-1", "1tb", "3gb", "1.5mb"} {
		if _, err := parseSize(in); err == nil {
			t.Errorf("parseSize(%q) accepted", in)
		}
	}
	if s := formatSize(64 << 20); s != "64mb" {
		t.Errorf("formatSize = %q", s)
	}
}

func TestHelpAndCommands(t *testing.T) {
	var stdout, stderr bytes.Buffer
	if code := run(context.Background(), []string{"--help"}, &stdout, &stderr, envOf(nil)); code != exitOK {
		t.Fatalf("--help: exit %d: %s", code, stderr.String())
	}
	for _, s := range settings {
		if !strings.Contains(stdout.String(), "--"+s.name) || !strings.Contains(stdout.String(), "$"+s.env) {
			t.Errorf("--help does not document --%s / $%s", s.name, s.env)
		}
	}
	for _, want := range []string{"$GR_CONFIG", "SIGTERM", "Exit codes"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("--help lacks %q", want)
		}
	}
	stdout.Reset()
	if code := run(context.Background(), []string{"--commands"}, &stdout, &stderr, envOf(nil)); code != exitOK {
		t.Fatalf("--commands: exit %d: %s", code, stderr.String())
	}
	for _, want := range []string{"PING (>=1)", "FLUSHALL", "removing keys that other regions wrote concurrently cannot converge", "not supported in active-active mode"} {
		if !strings.Contains(stdout.String(), want) {
			t.Errorf("--commands lacks %q", want)
		}
	}
}

func TestDaemonRedisUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	_ = l.Close() // nothing listens there now
	var stdout, stderr bytes.Buffer
	code := run(context.Background(), []string{"--instance", "shop", "--region", "fra", "--redis", addr, "--listen", "127.0.0.1:0"}, &stdout, &stderr, envOf(nil))
	if code != exitFailure || !strings.Contains(stderr.String(), "cannot reach redis-server at "+addr) {
		t.Fatalf("exit %d, stderr %q", code, stderr.String())
	}
}

// TestDaemon runs the daemon against a real redis-server and talks to it
// with go-redis, then stops it as SIGTERM would.
func TestDaemon(t *testing.T) {
	r := testredis.Start(t, testredis.WithPassword("backend-pw"))
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	listen := l.Addr().String()
	_ = l.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs testredis.SyncBuffer
	done := make(chan int, 1)
	env := map[string]string{"GR_REDIS_PASSWORD": "backend-pw", "GR_PASSWORD": "app-pw"}
	go func() {
		done <- run(ctx, []string{"--instance", "shop", "--region", "fra", "--redis", r.Addr(), "--listen", listen, "--max-value-bytes", "1kb"},
			&logs, &logs, envOf(env))
	}()

	rdb := redis.NewClient(&redis.Options{Addr: listen, Password: "app-pw", ClientName: "daemon-test"})
	defer func() { _ = rdb.Close() }()
	deadline := time.Now().Add(10 * time.Second)
	for rdb.Ping(ctx).Err() != nil {
		select {
		case code := <-done:
			t.Fatalf("daemon exited with %d:\n%s", code, logs.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("daemon not answering:\n%s", logs.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	if name, err := rdb.ClientGetName(ctx).Result(); err != nil || name != "daemon-test" {
		t.Fatalf("CLIENT GETNAME = %q, %v", name, err)
	}
	if err := rdb.Echo(ctx, strings.Repeat("x", 1025)).Err(); err == nil || err.Error() != "ERR value is too large (max 1024 bytes)" {
		t.Fatalf("ECHO 1025 bytes: %v", err)
	}
	if err := rdb.Do(ctx, "FLUSHALL").Err(); err == nil || !strings.HasPrefix(err.Error(), "ERR FLUSHALL is not supported in active-active mode: ") {
		t.Fatalf("FLUSHALL: %v", err)
	}
	info, err := rdb.Info(ctx, "server").Result()
	if err != nil || !strings.Contains(info, "tcp_port:"+listen[strings.LastIndexByte(listen, ':')+1:]) {
		t.Fatalf("INFO server = %q, %v", info, err)
	}
	// The child's connection is visible on the backing Redis by name.
	if list, err := r.Client().ClientList(ctx).Result(); err != nil || !strings.Contains(list, "name=gr-child-fra") {
		t.Fatalf("backend CLIENT LIST = %q, %v", list, err)
	}

	cancel() // SIGTERM
	select {
	case code := <-done:
		if code != exitOK {
			t.Fatalf("exit %d:\n%s", code, logs.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("daemon did not stop:\n%s", logs.String())
	}
	for _, want := range []string{`"message":"child started"`, `"region":"fra"`, `"instance":"shop"`, `"message":"child stopped"`} {
		if !strings.Contains(logs.String(), want) {
			t.Errorf("logs lack %s:\n%s", want, logs.String())
		}
	}
	if _, err := net.DialTimeout("tcp", listen, time.Second); err == nil {
		t.Error("still listening after the stop")
	}
}
