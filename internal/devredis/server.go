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
// Known differences from Redis that matter to the engine are listed in
// README.md in this folder.
package devredis

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
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
	m      *miniredis.Miniredis
	srv    *server.Server
	marker string // tags error and status replies through the trampoline

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
		m: m, srv: m.Server(), marker: newToken(),
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
	s.srv.SetPreHook(s.tick)
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

// tick runs before every command: a command from a client (miniredis's lock
// is free) moves the server clock to now; a command issued from inside a
// script or function (the lock is held by that script) sees the clock
// frozen. Under contention the clock may be a few moments stale, never
// ahead.
func (s *Server) tick(*server.Peer, string, ...string) bool {
	if s.m.TryLock() {
		s.m.Unlock()
		s.m.SetTime(wallNow())
	}
	return false
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
