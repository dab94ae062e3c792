// Package redisproc runs real redis-server processes: the regions of the
// playground and the Redis of integration tests.
package redisproc

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotInstalled is returned when no redis-server is on PATH.
var ErrNotInstalled = errors.New(`redisproc: redis-server not found on PATH (install Debian's redis-server, or run "go tool task deps")`)

// Options of a redis-server process.
type Options struct {
	Dir        string // working folder (RDB/AOF files, log); required
	Port       int    // 0 picks a free port
	Password   string // requirepass and masterauth
	AppendOnly bool
	ReplicaOf  string // "host:port" to start as a replica
	Args       []string
}

// Proc is a running redis-server.
type Proc struct {
	Opts Options
	cmd  *exec.Cmd
	done chan struct{}
}

// Installed reports whether redis-server is on PATH.
func Installed() bool {
	_, err := exec.LookPath("redis-server")
	return err == nil
}

// Start starts redis-server on 127.0.0.1 and waits until it answers PING.
func Start(ctx context.Context, o Options) (*Proc, error) {
	path, err := exec.LookPath("redis-server")
	if err != nil {
		return nil, ErrNotInstalled
	}
	if o.Dir == "" {
		return nil, errors.New("redisproc: Dir is required")
	}
	if o.Port == 0 {
		if o.Port, err = FreePort(); err != nil {
			return nil, err
		}
	}
	args := []string{
		"--port", strconv.Itoa(o.Port), "--bind", "127.0.0.1", "--dir", o.Dir,
		"--save", "", "--daemonize", "no", "--logfile", filepath.Join(o.Dir, "redis.log"),
		"--appendonly", map[bool]string{true: "yes", false: "no"}[o.AppendOnly],
	}
	if o.Password != "" {
		args = append(args, "--requirepass", o.Password, "--masterauth", o.Password)
	}
	if o.ReplicaOf != "" {
		host, port, err := net.SplitHostPort(o.ReplicaOf)
		if err != nil {
			return nil, fmt.Errorf("redisproc: replicaof %q: %w", o.ReplicaOf, err)
		}
		args = append(args, "--replicaof", host, port)
	}
	args = append(args, o.Args...)
	cmd := exec.Command(path, args...)
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("redisproc: %w", err)
	}
	p := &Proc{Opts: o, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); close(p.done) }()
	c := p.Client()
	defer func() { _ = c.Close() }()
	deadline := time.Now().Add(10 * time.Second)
	for c.Ping(ctx).Err() != nil {
		select {
		case <-p.done:
			log, _ := os.ReadFile(filepath.Join(o.Dir, "redis.log"))
			return nil, fmt.Errorf("redisproc: redis-server exited: %s", log)
		default:
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.Kill()
			return nil, errors.New("redisproc: redis-server did not answer PING within 10s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return p, nil
}

// Addr returns host:port.
func (p *Proc) Addr() string { return "127.0.0.1:" + strconv.Itoa(p.Opts.Port) }

// Client returns a new go-redis client of database 0.
func (p *Proc) Client() *redis.Client {
	return redis.NewClient(&redis.Options{Addr: p.Addr(), Password: p.Opts.Password})
}

// Kill stops the process at once (SIGKILL), as a crash does.
func (p *Proc) Kill() {
	_ = p.cmd.Process.Kill()
	<-p.done
}

// Stop shuts the server down (SIGTERM: Redis finishes its AOF and exits)
// and waits for it.
func (p *Proc) Stop() {
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.Kill()
	}
}

// FreePort returns a free TCP port on 127.0.0.1.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer func() { _ = l.Close() }()
	return l.Addr().(*net.TCPAddr).Port, nil
}
