// Package testredis starts real redis-server processes for tests: one per
// call, on a free port of 127.0.0.1, in a temporary directory, without
// persistence unless asked, and stopped when the test ends.
//
//	func TestSomething(t *testing.T) {
//		r := testredis.Start(t)
//		rdb := r.Client() // closed at cleanup
//		...
//	}
//
// redis-server must be on PATH (`go tool task deps` installs it); Start
// fails the test when it is not, it never skips.
package testredis

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// Defaults.
const (
	// StartTimeout bounds the wait for a new server to answer PING.
	StartTimeout = 10 * time.Second
	// StopTimeout bounds the wait for SHUTDOWN NOSAVE before the process
	// is killed.
	StopTimeout = 5 * time.Second
	// startAttempts retries a start that lost its port to another process.
	startAttempts = 3
)

// Server is a running redis-server.
type Server struct {
	// Port is the TCP port on 127.0.0.1.
	Port int
	// Dir is the server's working directory (dump and AOF files).
	Dir string

	t      testing.TB
	opts   options
	mu     sync.Mutex
	p      *proc // the current process (Restart replaces it)
	client *redis.Client
}

// proc is one redis-server process of a Server.
type proc struct {
	cmd      *exec.Cmd
	out      *SyncBuffer
	exited   chan struct{}
	killOnce sync.Once
}

func (s *Server) proc() *proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.p
}

// Option configures Start.
type Option func(*options)

type options struct {
	password   string
	appendOnly bool
	replicaOf  string
	args       []string
}

// WithPassword sets requirepass; Client authenticates with it.
func WithPassword(pw string) Option { return func(o *options) { o.password = pw } }

// WithAppendOnly turns on the append-only file (appendfsync everysec).
func WithAppendOnly() Option { return func(o *options) { o.appendOnly = true } }

// WithReplicaOf makes the server a replica of the server at addr
// ("127.0.0.1:port"). With WithPassword, the same password is used as
// masterauth.
func WithReplicaOf(addr string) Option { return func(o *options) { o.replicaOf = addr } }

// WithArgs adds redis-server arguments ("--maxmemory", "10mb", ...); later
// arguments override earlier ones.
func WithArgs(args ...string) Option {
	return func(o *options) { o.args = append(o.args, args...) }
}

// Start starts a redis-server for the test and stops it at cleanup
// (SHUTDOWN NOSAVE, then kill). Its output is logged when the test fails.
func Start(t testing.TB, opts ...Option) *Server {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf(`redis-server not found: run "go tool task deps" (%v)`, err)
	}
	var o options
	for _, opt := range opts {
		opt(&o)
	}
	dir := t.TempDir()
	var lastErr error
	for range startAttempts {
		port, err := freePort()
		if err != nil {
			t.Fatalf("testredis: %v", err)
		}
		s := &Server{Port: port, Dir: dir, t: t, opts: o}
		if lastErr = s.start(path); lastErr != nil {
			continue
		}
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("redis-server %s output:\n%s", s.Addr(), s.Output())
			}
			s.stop()
		})
		return s
	}
	t.Fatalf("testredis: %v", lastErr)
	return nil
}

// StartReplica starts a redis-server that replicates s (with s's password
// as its own and as masterauth) and waits until its link to s is up.
func (s *Server) StartReplica(t testing.TB, opts ...Option) *Server {
	t.Helper()
	opts = append([]Option{WithReplicaOf(s.Addr()), WithPassword(s.opts.password)}, opts...)
	r := Start(t, opts...)
	deadline := time.Now().Add(StartTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		info, err := r.Client().Info(ctx, "replication").Result()
		cancel()
		if err == nil && strings.Contains(info, "master_link_status:up") {
			return r
		}
		if time.Now().After(deadline) {
			t.Fatalf("testredis: replica %s of %s: link not up within %v (%v)\n%s", r.Addr(), s.Addr(), StartTimeout, err, info)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Restart starts the server again, on the same port and in the same
// directory, after Kill: a crashed Redis coming back. Without persistence
// it comes back empty; with WithReplicaOf it is a replica again.
func (s *Server) Restart() {
	s.t.Helper()
	select {
	case <-s.proc().exited:
	default:
		s.t.Fatalf("testredis: Restart of %s, which still runs (Kill it first)", s.Addr())
	}
	path, err := exec.LookPath("redis-server")
	if err != nil {
		s.t.Fatalf("redis-server not found: %v", err)
	}
	if err := s.start(path); err != nil {
		s.t.Fatalf("testredis: restart: %v", err)
	}
}

// start starts a process on s.Port and waits for its PING.
func (s *Server) start(path string) error {
	port, dir, o := s.Port, s.Dir, s.opts
	args := []string{
		"--port", strconv.Itoa(port),
		"--bind", "127.0.0.1",
		"--dir", dir,
		"--save", "",
		"--appendonly", "no",
		"--daemonize", "no",
		"--logfile", "",
		"--loglevel", "notice",
		"--repl-diskless-sync-delay", "0", // replicas sync at once
	}
	if o.appendOnly {
		args = append(args, "--appendonly", "yes", "--appendfsync", "everysec")
	}
	if o.password != "" {
		args = append(args, "--requirepass", o.password)
	}
	if o.replicaOf != "" {
		host, p, err := net.SplitHostPort(o.replicaOf)
		if err != nil {
			return fmt.Errorf("replica of %q: %w", o.replicaOf, err)
		}
		args = append(args, "--replicaof", host, p)
		if o.password != "" {
			args = append(args, "--masterauth", o.password)
		}
	}
	args = append(args, o.args...)

	out := &SyncBuffer{}
	cmd := exec.Command(path, args...)
	cmd.Dir = dir
	cmd.Stdout, cmd.Stderr = out, out
	setProcAttr(cmd)
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting redis-server: %w", err)
	}
	pr := &proc{cmd: cmd, out: out, exited: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(pr.exited)
	}()
	s.mu.Lock()
	s.p = pr
	s.mu.Unlock()

	rdb := s.newClient()
	defer func() { _ = rdb.Close() }()
	deadline := time.Now().Add(StartTimeout)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		err := rdb.Ping(ctx).Err()
		cancel()
		if err == nil {
			break
		}
		select {
		case <-pr.exited:
			return fmt.Errorf("redis-server exited at start (port %d): %s", port, lastLines(out.String(), 10))
		default:
		}
		if time.Now().After(deadline) {
			s.kill()
			return fmt.Errorf("redis-server did not answer PING within %v: %w\n%s", StartTimeout, err, lastLines(out.String(), 10))
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil
}

// Addr returns "127.0.0.1:<port>".
func (s *Server) Addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(s.Port)) }

// Password returns the requirepass password, or "".
func (s *Server) Password() string { return s.opts.password }

// Client returns a go-redis client of the server (database 0), closed at
// cleanup. Every call returns the same client.
func (s *Server) Client() *redis.Client {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.client == nil {
		s.client = s.newClient()
	}
	return s.client
}

// Options returns go-redis options for the server, to build clients with
// other settings.
func (s *Server) Options() *redis.Options {
	return &redis.Options{Addr: s.Addr(), Password: s.opts.password}
}

func (s *Server) newClient() *redis.Client { return redis.NewClient(s.Options()) }

// Output returns what the server's current process has logged so far.
func (s *Server) Output() string { return s.proc().out.String() }

// Kill stops the server at once with SIGKILL, as a crash would (nothing is
// saved). Cleanup does nothing more afterwards, unless Restart runs it
// again.
func (s *Server) Kill() {
	s.kill()
	<-s.proc().exited
}

func (s *Server) kill() {
	p := s.proc()
	p.killOnce.Do(func() { _ = p.cmd.Process.Kill() })
}

// stop asks the server to SHUTDOWN NOSAVE and kills it if it does not
// exit within StopTimeout.
func (s *Server) stop() {
	s.mu.Lock()
	if s.client != nil {
		_ = s.client.Close()
	}
	s.mu.Unlock()
	p := s.proc()
	select {
	case <-p.exited:
		return
	default:
	}
	opt := s.Options()
	opt.MaxRetries = -1 // the connection drops: no reply, nothing to retry
	rdb := redis.NewClient(opt)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_ = rdb.ShutdownNoSave(ctx).Err()
	cancel()
	_ = rdb.Close()
	select {
	case <-p.exited:
	case <-time.After(StopTimeout):
		s.kill()
		<-p.exited
	}
}

// freePort returns a TCP port of 127.0.0.1 that was free a moment ago.
func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, fmt.Errorf("finding a free port: %w", err)
	}
	defer func() { _ = l.Close() }()
	addr, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return 0, errors.New("finding a free port: not a TCP address")
	}
	return addr.Port, nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// SyncBuffer is a bytes.Buffer safe for a process's (or a logger's)
// writes and a test's reads.
type SyncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *SyncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *SyncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}
