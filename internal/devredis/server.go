// Package devredis is a DEVELOPMENT-ONLY, in-process, Redis-compatible
// server for the local playground, used when no redis-server is on PATH.
//
//	╔══════════════════════════════════════════════════════════════════╗
//	║  FOR DEVELOPMENT ONLY. NOT FOR PRODUCTION. NOT A REDIS.          ║
//	║  No persistence (everything is lost on Close or exit), no        ║
//	║  replication, one process, memory only, approximate semantics.   ║
//	║  Tests of the real path use real redis-server processes and      ║
//	║  never this package.                                             ║
//	╚══════════════════════════════════════════════════════════════════╝
//
// It is github.com/alicebob/miniredis/v2 (a Go re-implementation of Redis
// written for unit tests) extended with what the Global Replica engine needs
// and miniredis lacks: Redis 7 functions (FUNCTION LOAD [REPLACE], FLUSH,
// DELETE, LIST, STATS and FCALL / FCALL_RO) running in gopher-lua with a
// Redis-like function environment (redis.call/pcall/error_reply/
// status_reply/register_function, cmsgpack, cjson, read-only globals), so
// that the engine's function library (child/lua) runs on it unchanged.
//
// How a function call runs: FCALL parks its arguments under a random token
// and has miniredis run a three-line EVAL trampoline that calls back into
// devredis with the token. miniredis holds its global lock for the whole
// EVAL, so the function is atomic with respect to every other command, and
// the commands it issues go through miniredis's own nested-call path: they
// start in the caller's database, SELECT inside a function lasts for that
// call only, and an FCALL inside MULTI is queued and runs at EXEC. The
// trampoline's reply is re-tagged so that error and status replies nested in
// arrays (a grouped gr_write returns them) survive the round trip.
//
// Time: the server's clock (TIME, key expiry, PEXPIREAT/PEXPIRETIME) is set
// from the wall clock before each client command and frozen while a command
// or function runs, as Redis freezes it during a script; TTLs count down on
// that clock (miniredis ClockTTL), so keys really expire.
//
// INFO is answered by devredis (miniredis lacks the server and keyspace
// sections; the engine reads its run_id from INFO server).
//
// Known differences from Redis are listed in README.md in this folder.
package devredis

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"reflect"
	"strings"
	"sync"
	"time"

	"github.com/alicebob/miniredis/v2"
	"github.com/alicebob/miniredis/v2/server"
)

// Notice is a one-line warning that whoever starts the server should show
// to the user.
const Notice = "devredis: embedded Redis-compatible server FOR DEVELOPMENT ONLY " +
	"(in memory, no persistence, not Redis; install redis-server for anything real)"

// Server is a running development-only server. Close it when done.
type Server struct {
	m       *miniredis.Miniredis
	srv     *server.Server
	marker  string // tags error and status replies through the trampoline
	runID   string
	port    string
	started time.Time

	mu      sync.Mutex
	libs    map[string]*library  // by library name
	funcs   map[string]*function // by function name, across libraries
	pending map[string]*pendingCall
	closed  bool
}

// pendingCall is an FCALL waiting for its trampoline to run (at once, or at
// EXEC when queued in MULTI).
type pendingCall struct {
	fn         string
	keys, args []string
	ro         bool
	at         time.Time
}

// pendingTTL bounds how long an FCALL queued in a MULTI that is never
// executed keeps its arguments.
const pendingTTL = 10 * time.Minute

// Start starts a development-only server listening on addr ("host:port";
// "" or "127.0.0.1:0" picks a free port on localhost). It logs nothing.
func Start(addr string) (*Server, error) {
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	m := miniredis.NewMiniRedis()
	if err := m.StartAddr(addr); err != nil {
		return nil, fmt.Errorf("devredis: listening on %s: %w", addr, err)
	}
	m.SetTime(wallNow())
	m.ClockTTL(true)
	s := &Server{
		m: m, srv: m.Server(), marker: newToken(), runID: newToken() + newToken()[:8], port: m.Port(), started: time.Now(),
		libs: map[string]*library{}, funcs: map[string]*function{}, pending: map[string]*pendingCall{},
	}
	for _, r := range []struct {
		name string
		fn   server.Cmd
	}{
		{"FUNCTION", s.cmdFunction},
		{"FCALL", s.cmdFcall},
		{"FCALL_RO", s.cmdFcall},
		{internalCmd, s.cmdInternal},
	} {
		if err := s.srv.Register(r.name, r.fn); err != nil {
			m.Close()
			return nil, fmt.Errorf("devredis: registering %s: %w", r.name, err)
		}
	}
	s.srv.SetPreHook(s.hook)
	return s, nil
}

// Addr returns the address the server listens on, as "host:port".
func (s *Server) Addr() string { return s.m.Addr() }

// Close stops the server, waits for its connections to end and drops all
// data.
func (s *Server) Close() error {
	s.m.Close()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.closed {
		s.closed = true
		for _, l := range s.libs {
			l.close()
		}
		s.libs, s.funcs = map[string]*library{}, map[string]*function{}
	}
	return nil
}

// hook runs before every command. A command from a client moves the
// server clock to now; a command issued from inside a script or function
// (miniredis's lock is held by that script) sees the clock frozen. It also
// answers INFO, whose keyspace section (read by the child) miniredis lacks.
func (s *Server) hook(c *server.Peer, cmd string, args ...string) bool {
	nested, known := ctxBool(c, "nested")
	if !known {
		// another miniredis: a free lock means no script is running here
		nested = !s.m.TryLock()
		if !nested {
			s.m.Unlock()
		}
	}
	if !nested {
		s.m.SetTime(wallNow())
	}
	if cmd == "INFO" {
		if inTx, known := ctxBool(c, "transaction"); known && !inTx {
			s.info(c, args, nested)
			return true
		}
	}
	return false
}

// ctxBool reads a field of miniredis's per-connection state: a bool, or
// whether a slice is non-nil. known is false if the field is not there.
func ctxBool(c *server.Peer, field string) (v, known bool) {
	if c.Ctx == nil {
		return false, true // a connection's first command: not nested, no MULTI
	}
	p := reflect.ValueOf(c.Ctx)
	if p.Kind() != reflect.Pointer || p.IsNil() || p.Elem().Kind() != reflect.Struct {
		return false, false
	}
	f := p.Elem().FieldByName(field)
	switch {
	case !f.IsValid():
		return false, false
	case f.Kind() == reflect.Bool:
		return f.Bool(), true
	case f.Kind() == reflect.Slice:
		return !f.IsNil(), true
	}
	return false, false
}

// info answers INFO [section ...] with the sections a Redis client most
// often reads: server (with a run_id that is new for every Server),
// clients, stats, replication and, except from inside a function (it needs
// miniredis's lock, which the function holds), keyspace.
func (s *Server) info(c *server.Peer, args []string, nested bool) {
	want := map[string]bool{}
	for _, a := range args {
		want[strings.ToLower(a)] = true
	}
	all := len(args) == 0 || want["all"] || want["everything"] || want["default"]
	var b strings.Builder
	section := func(name string, lines ...string) {
		if !all && !want[strings.ToLower(name)] {
			return
		}
		if b.Len() > 0 {
			b.WriteString("\r\n")
		}
		b.WriteString("# " + name + "\r\n")
		for _, l := range lines {
			b.WriteString(l + "\r\n")
		}
	}
	section("Server", "redis_version:7.0.0", "redis_mode:standalone", "devredis:development-only",
		"arch_bits:64", fmt.Sprintf("process_id:%d", os.Getpid()), "run_id:"+s.runID,
		"tcp_port:"+s.port, fmt.Sprintf("uptime_in_seconds:%d", int(time.Since(s.started).Seconds())))
	section("Clients", fmt.Sprintf("connected_clients:%d", s.srv.ClientsLen()))
	section("Stats", fmt.Sprintf("total_connections_received:%d", s.srv.TotalConnections()),
		fmt.Sprintf("total_commands_processed:%d", s.srv.TotalCommands()))
	section("Replication", "role:master", "connected_slaves:0")
	if !nested {
		var ks []string
		for i := range 16 {
			db := s.m.DB(i)
			keys := db.Keys()
			if len(keys) == 0 {
				continue
			}
			expires := 0
			for _, k := range keys {
				if db.TTL(k) > 0 {
					expires++
				}
			}
			ks = append(ks, fmt.Sprintf("db%d:keys=%d,expires=%d,avg_ttl=0", i, len(keys), expires))
		}
		section("Keyspace", ks...)
	}
	c.WriteBulk(b.String())
}

// wallNow is the wall clock without Go's monotonic reading: TTLs are kept
// as durations and a deadline comes back as clock + TTL, which is exact
// only if every difference is taken on the same (wall) clock.
func wallNow() time.Time { return time.Now().Round(0) }

func newToken() string {
	var b [16]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
