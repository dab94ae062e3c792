package child

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"reflect"
	"runtime/debug"
	"sync"
	"sync/atomic"
	"time"

	"github.com/rs/zerolog"
	"github.com/tidwall/redcon"
)

// Versions reported to clients.
const (
	// RedisVersion is the Redis version the endpoint reports in HELLO and
	// INFO: the reply formats and error texts follow Redis 7.2.
	RedisVersion = "7.2.0"
)

// Version is the Global Replica version, reported by INFO and --version.
// Release builds set it with -ldflags "-X ...child.Version=v1.2.3".
var Version = "0.1.0-dev"

// Defaults of Config.
const (
	DefaultAddr = "127.0.0.1:6380"
	// DefaultMaxValueBytes bounds one argument. Redis allows 512 MiB
	// (proto-max-bulk-len); a child keeps every write in its op log and
	// ships it to every region, so it refuses much smaller values by
	// default. Note that an op must also fit the sync channel's message
	// size limit to replicate.
	DefaultMaxValueBytes = 64 << 20
	// DefaultMaxRequestBytes bounds the arguments of one request together.
	DefaultMaxRequestBytes = 256 << 20
	// DefaultMaxArgs bounds the number of arguments of one request.
	DefaultMaxArgs = 1 << 20
	// DefaultMaxClients is Redis's maxclients default.
	DefaultMaxClients = 10000
	// DefaultShutdownTimeout bounds Run's shutdown when its context ends.
	DefaultShutdownTimeout = 10 * time.Second
)

// Config configures the RESP endpoint.
type Config struct {
	// Addr is the TCP listen address (DefaultAddr); port 0 picks a free one.
	Addr string
	// Password, when set, is required with AUTH (or HELLO ... AUTH) before
	// any other command, for the user "default".
	Password string
	// MaxValueBytes bounds every argument (DefaultMaxValueBytes): a larger
	// one is discarded as it arrives and the command answers
	// "ERR value is too large (max N bytes)"; the connection stays usable.
	MaxValueBytes int
	// MaxRequestBytes bounds the arguments of one command together
	// (DefaultMaxRequestBytes, at least MaxValueBytes).
	MaxRequestBytes int
	// MaxArgs bounds the number of arguments of one command (DefaultMaxArgs).
	MaxArgs int
	// MaxClients bounds the open connections (DefaultMaxClients); more are
	// answered "ERR max number of clients reached" and closed.
	MaxClients int
	// ShutdownTimeout bounds the graceful part of Run's shutdown
	// (DefaultShutdownTimeout).
	ShutdownTimeout time.Duration
}

func (c *Config) validate() error {
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	if c.MaxValueBytes < 0 || c.MaxRequestBytes < 0 || c.MaxArgs < 0 || c.MaxClients < 0 || c.ShutdownTimeout < 0 {
		return fmt.Errorf("%w: negative limit", ErrConfig)
	}
	if c.MaxValueBytes == 0 {
		c.MaxValueBytes = DefaultMaxValueBytes
	}
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = max(DefaultMaxRequestBytes, c.MaxValueBytes)
	}
	if c.MaxRequestBytes < c.MaxValueBytes {
		return fmt.Errorf("%w: MaxRequestBytes %d is below MaxValueBytes %d", ErrConfig, c.MaxRequestBytes, c.MaxValueBytes)
	}
	if c.MaxArgs == 0 {
		c.MaxArgs = DefaultMaxArgs
	}
	if c.MaxClients == 0 {
		c.MaxClients = DefaultMaxClients
	}
	if c.ShutdownTimeout == 0 {
		c.ShutdownTimeout = DefaultShutdownTimeout
	}
	return nil
}

// forcedCloseGrace is how long Close waits for cancelled commands after
// its context ended.
const forcedCloseGrace = time.Second

// Server errors.
var (
	// ErrConfig wraps an invalid Config.
	ErrConfig = errors.New("child: invalid server config")
	// ErrServerClosed is returned by Run after Close, and by Listen and Run
	// on a closed server.
	ErrServerClosed = errors.New("child: server closed")
)

// Log keys of the child package.
const (
	logKeyConn   = "conn"
	logKeyAddr   = "addr"
	logKeyCmd    = "cmd"
	logKeyPanic  = "panic"
	logKeyStack  = "stack"
	logKeyListen = "listen"
	logKeyConns  = "conns"
)

// Server is the RESP endpoint of a child: it accepts client connections,
// frames their requests, dispatches them through the command table and
// writes the replies. Build it with NewServer, then call Run.
type Server struct {
	cfg    Config
	engine *Engine
	log    zerolog.Logger
	// info is the engine's optional INFO sections, if it has any.
	info infoProvider
	// backendLog is log sampled: during an outage of the backing Redis
	// every command fails, and the log must stay readable.
	backendLog zerolog.Logger
	started    time.Time
	runID      string

	// base is the context of every connection; cancelled by a hard stop.
	base       context.Context
	cancelBase context.CancelFunc

	mu       sync.Mutex
	ln       net.Listener
	conns    map[int64]*clientConn
	closing  bool
	closeErr error
	stopped  chan struct{} // closed when Close begins
	drained  chan struct{} // closed when Close ends

	nextID atomic.Int64
	stats  serverStats
}

// serverStats are the counters of INFO stats.
type serverStats struct {
	connectionsReceived atomic.Int64
	rejectedConnections atomic.Int64
	commandsProcessed   atomic.Int64
	errorReplies        atomic.Int64
	protocolErrors      atomic.Int64
	handlerPanics       atomic.Int64
	netInput            atomic.Int64
	netOutput           atomic.Int64
}

// NewServer returns a server for cfg. engine runs the data commands; it may
// be nil, and then data commands answer ErrNoEngine (tests of the
// connection commands).
func NewServer(cfg Config, engine *Engine, log zerolog.Logger) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	var id [20]byte
	if _, err := rand.Read(id[:]); err != nil {
		return nil, fmt.Errorf("child: run id: %w", err)
	}
	base, cancel := context.WithCancel(context.Background())
	var info infoProvider
	if engine != nil {
		info, _ = any(engine).(infoProvider)
	}
	return &Server{
		info:       info,
		cfg:        cfg,
		engine:     engine,
		log:        log,
		backendLog: log.Sample(&zerolog.BurstSampler{Burst: 10, Period: time.Second, NextSampler: &zerolog.BasicSampler{N: 1000}}),
		started:    time.Now(),
		runID:      hex.EncodeToString(id[:]),
		base:       base,
		cancelBase: cancel,
		conns:      map[int64]*clientConn{},
		stopped:    make(chan struct{}),
		drained:    make(chan struct{}),
	}, nil
}

// Listen binds the listen address. Run calls it when it was not called
// before; calling it first lets the caller learn Addr (port 0) before Run.
func (s *Server) Listen() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closing {
		return ErrServerClosed
	}
	if s.ln != nil {
		return nil
	}
	var lc net.ListenConfig
	ln, err := lc.Listen(s.base, "tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("child: listen on %s: %w", s.cfg.Addr, err)
	}
	s.ln = ln
	return nil
}

// Addr returns the bound address, or nil before Listen.
func (s *Server) Addr() net.Addr {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ln == nil {
		return nil
	}
	return s.ln.Addr()
}

// Run serves clients until ctx ends or Close is called. When ctx ends it
// shuts down like Close with a context bounded by Config.ShutdownTimeout,
// and returns Close's error (nil after a graceful shutdown). It returns
// ErrServerClosed when Close was called by someone else.
func (s *Server) Run(ctx context.Context) error {
	if err := s.Listen(); err != nil {
		return err
	}
	s.mu.Lock()
	ln := s.ln
	s.mu.Unlock()
	rs := redcon.NewServerNetwork("tcp", ln.Addr().String(), s.serveRESP, s.accepted, s.disconnected)
	served := make(chan error, 1)
	go func() { served <- rs.Serve(&listener{Listener: ln, srv: s}) }()
	s.log.Info().Str(logKeyListen, ln.Addr().String()).Msg("serving RESP")

	select {
	case <-ctx.Done():
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
		defer cancel()
		err := s.Close(sctx)
		s.logServeEnd(<-served)
		return err
	case <-s.stopped:
		<-s.drained
		s.logServeEnd(<-served)
		return ErrServerClosed
	case err := <-served:
		// Serve returns only when the listener fails for good.
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
		defer cancel()
		_ = s.Close(sctx)
		if err == nil {
			err = errors.New("child: listener stopped")
		}
		return err
	}
}

// logServeEnd logs an error of redcon's accept loop after a shutdown.
func (s *Server) logServeEnd(err error) {
	if err != nil && !errors.Is(err, net.ErrClosed) {
		s.log.Warn().Err(err).Msg("accept loop ended with an error")
	}
}

// Close stops the server: it stops accepting, lets every connection finish
// the commands it has received (their replies are written), then closes it.
// When ctx ends first, the remaining connections are closed at once and
// their in-flight commands are cancelled; Close then returns ctx's error.
// Close is safe to call more than once and concurrently; later calls wait
// for the first and return its result.
func (s *Server) Close(ctx context.Context) error {
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		select {
		case <-s.drained:
			return s.closeErr
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	s.closing = true
	close(s.stopped)
	ln := s.ln
	conns := make([]*clientConn, 0, len(s.conns))
	for _, cn := range s.conns {
		conns = append(conns, cn)
	}
	s.mu.Unlock()

	if ln != nil {
		_ = ln.Close()
	}
	for _, cn := range conns {
		if cn.nc != nil {
			cn.nc.drain()
		}
	}
	var err error
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for s.connCount() > 0 && err == nil {
		select {
		case <-ctx.Done():
			err = fmt.Errorf("child: shutdown with %d connections still busy: %w", s.connCount(), ctx.Err())
		case <-tick.C:
		}
	}
	if err != nil {
		// Close the sockets first, then cancel the commands in flight:
		// their clients see the connection close, not a half answer.
		s.mu.Lock()
		for _, cn := range s.conns {
			if cn.nc != nil {
				_ = cn.nc.Close()
			}
		}
		s.mu.Unlock()
		s.cancelBase()
		// Give the cancelled commands a moment to return, so that nothing
		// of the server runs after Close in the common case.
		deadline := time.Now().Add(forcedCloseGrace)
		for s.connCount() > 0 && time.Now().Before(deadline) {
			<-tick.C
		}
		s.log.Warn().Err(err).Msg("forced shutdown")
	} else {
		s.cancelBase()
		s.log.Info().Msg("RESP server stopped")
	}
	s.mu.Lock()
	s.closeErr = err
	s.mu.Unlock()
	close(s.drained)
	return err
}

func (s *Server) connCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

func (s *Server) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing
}

// listener wraps the net.Listener given to redcon: it puts the framer in
// front of every connection, enforces MaxClients, retries temporary accept
// errors, and holds redcon's accept loop during a graceful shutdown (redcon
// closes every connection as soon as its accept loop ends).
type listener struct {
	net.Listener
	srv *Server
}

func (l *listener) Accept() (net.Conn, error) {
	s := l.srv
	backoff := 5 * time.Millisecond
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			if s.isClosing() {
				<-s.drained
				return nil, err
			}
			var ne net.Error
			if errors.As(err, &ne) && !errors.Is(err, net.ErrClosed) {
				s.log.Warn().Err(err).Dur("retry_in", backoff).Msg("accept failed")
				time.Sleep(backoff)
				backoff = min(2*backoff, time.Second)
				continue
			}
			return nil, err
		}
		backoff = 5 * time.Millisecond
		s.stats.connectionsReceived.Add(1)
		if s.connCount() >= s.cfg.MaxClients {
			s.stats.rejectedConnections.Add(1)
			_ = c.SetWriteDeadline(time.Now().Add(errorWriteTimeout))
			_, _ = c.Write([]byte("-ERR max number of clients reached\r\n"))
			_ = c.Close()
			continue
		}
		return &guardConn{
			Conn:  c,
			fr:    newFramer(s.cfg.MaxArgs, s.cfg.MaxValueBytes, s.cfg.MaxRequestBytes),
			stats: &s.stats,
			in:    make([]byte, readBufferSize),
		}, nil
	}
}

// accepted is redcon's accept callback: it registers the connection.
func (s *Server) accepted(rc redcon.Conn) bool {
	gc, ok := rc.NetConn().(*guardConn)
	if !ok {
		return false
	}
	cn := s.newConn(gc.Conn)
	cn.nc, cn.rc = gc, rc
	rc.SetContext(cn)
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		cn.cancel()
		return false
	}
	s.conns[cn.id] = cn
	s.mu.Unlock()
	s.log.Debug().Int64(logKeyConn, cn.id).Str(logKeyAddr, cn.addr).Msg("client connected")
	return true
}

// newConn makes the state of a connection.
func (s *Server) newConn(c net.Conn) *clientConn {
	now := time.Now()
	cn := &clientConn{
		id:            s.nextID.Add(1),
		fd:            -1,
		created:       now,
		authenticated: s.cfg.Password == "",
	}
	if c != nil {
		cn.addr = c.RemoteAddr().String()
		cn.laddr = c.LocalAddr().String()
		cn.fd = fdOf(c)
	}
	cn.ctx, cn.cancel = context.WithCancel(s.base)
	cn.lastActive.Store(now.UnixNano())
	return cn
}

// disconnected is redcon's close callback.
func (s *Server) disconnected(rc redcon.Conn, err error) {
	cn, ok := rc.Context().(*clientConn)
	if !ok {
		return
	}
	cn.cancel()
	// Log before unregistering: Close returns once no connection is left,
	// and nothing may log after that.
	var perr *protocolError
	switch {
	case errors.As(err, &perr):
		s.stats.protocolErrors.Add(1)
		s.log.Info().Int64(logKeyConn, cn.id).Str(logKeyAddr, cn.addr).Err(err).Msg("client closed for a protocol error")
	case err == nil || errors.Is(err, errDraining) || errors.Is(err, net.ErrClosed):
		s.log.Debug().Int64(logKeyConn, cn.id).Msg("client disconnected")
	default:
		s.log.Debug().Int64(logKeyConn, cn.id).Err(err).Msg("client disconnected")
	}
	s.mu.Lock()
	delete(s.conns, cn.id)
	s.mu.Unlock()
}

// serveRESP is redcon's handler: one framed request.
func (s *Server) serveRESP(rc redcon.Conn, cmd redcon.Command) {
	cn, ok := rc.Context().(*clientConn)
	if !ok {
		return
	}
	w := redcon.BaseWriter(rc)
	s.dispatch(cn, w, cmd.Args)
	if len(cn.pending) > 0 && len(rc.PeekPipeline()) == 0 {
		s.finishPending(cn, w) // the pipeline's last command: replies go out now
	}
	if cn.closing && cn.rc != nil {
		_ = cn.rc.Close() // flushes the replies first
	}
}

// dispatch runs one request of a connection and writes its reply to w:
// refusals by the framer, lookup, refused commands, arity, unknown
// subcommand and its arity, NOAUTH (Redis's order), argument sizes, engine
// presence, then the handler, which runs with panic recovery.
//
// Replies stay in request order when handlers defer them (Call.Later):
// while deferred replies are pending, a command of a Defers entry runs and
// queues its reply behind them; anything else first finishes them.
func (s *Server) dispatch(cn *clientConn, w *redcon.Writer, args [][]byte) {
	if cn.closing {
		return // after QUIT nothing more runs
	}
	cn.seq++
	s.stats.commandsProcessed.Add(1)
	cn.lastActive.Store(time.Now().UnixNano())
	call := &cn.call
	*call = Call{Ctx: cn.ctx, Args: args, srv: s, conn: cn, w: w}

	cmd, err := s.resolve(cn, call, args)
	if len(cn.pending) > 0 && (err != nil || cmd == nil || !cmd.Defers) {
		s.finishPending(cn, w)
	}
	if err != nil {
		call.WriteError(err)
		return
	}
	if cmd == nil {
		return // no arguments: not produced by the framer
	}
	if len(cn.pending) == 0 {
		s.run(call, cmd.Handler)
		if call.later != nil {
			cn.pending = append(cn.pending, pendingReply{call: *call})
		}
	} else {
		// Behind deferred replies: capture this reply and queue it.
		scratch := cn.scratchWriter()
		call.w = scratch
		s.run(call, cmd.Handler)
		if call.later != nil {
			cn.pending = append(cn.pending, pendingReply{call: *call})
		} else {
			cn.pending = append(cn.pending, pendingReply{raw: append([]byte(nil), scratch.Buffer()...)})
		}
		scratch.SetBuffer(scratch.Buffer()[:0])
		call.w = w
	}
	if call.quit {
		cn.closing = true
	}
}

// resolve finds the table entry to run for a request, or the error that
// answers it.
func (s *Server) resolve(cn *clientConn, call *Call, args [][]byte) (*Command, error) {
	if cn.nc != nil {
		if err := cn.nc.fr.takeRefusal(cn.seq); err != nil {
			call.Cmd = &refusedRequest
			return nil, err
		}
	}
	if len(args) == 0 {
		return nil, nil
	}
	cmd := lookupCommand(args[0])
	if cmd == nil {
		call.Cmd = &unknownRequest
		return nil, replyError(unknownCommandError(args))
	}
	call.Cmd = cmd
	cn.lastCmd.Store(cmd)
	if cmd.Refused != "" {
		return nil, replyError(refusalError(cmd))
	}
	if !arityOK(cmd.Arity, len(args)) {
		return nil, replyError(arityError(cmd))
	}
	if cmd.subs != nil && len(args) > 1 {
		sub := lookupIn(cmd.subs, args[1])
		if sub == nil {
			return nil, replyError("ERR unknown subcommand '" + truncate(args[1], 128) + "'. Try " + cmd.upper + " HELP.")
		}
		if !arityOK(sub.Arity, len(args)) {
			return nil, replyError(arityError(sub))
		}
		cmd = sub
		call.Cmd = cmd
		cn.lastCmd.Store(cmd)
	}
	if !cn.authenticated && !cmd.noAuth {
		return nil, errNoAuth
	}
	for _, a := range args {
		if len(a) > s.cfg.MaxValueBytes {
			return nil, replyError(fmt.Sprintf("ERR value is too large (max %d bytes)", s.cfg.MaxValueBytes))
		}
	}
	if cmd.needsEngine && s.engine == nil {
		return nil, ErrNoEngine
	}
	if cmd.Handler == nil { // a container command given without a subcommand
		return nil, replyError(arityError(cmd))
	}
	return cmd, nil
}

const errNoAuth = replyError("NOAUTH Authentication required.")

// pendingReply is a reply not yet written: a deferred one (call.later) or
// the bytes of one that ran behind deferred ones.
type pendingReply struct {
	call Call
	raw  []byte
}

// finishPending writes the pending replies of a connection in order,
// running the deferred ones' finish functions.
func (s *Server) finishPending(cn *clientConn, w *redcon.Writer) {
	s.flushQueued(cn)
	for i := range cn.pending {
		p := &cn.pending[i]
		if p.call.later == nil {
			w.WriteRaw(p.raw)
			continue
		}
		finish := p.call.later
		p.call.later = nil
		p.call.w = w
		s.run(&p.call, finish)
		cn.pending[i] = pendingReply{}
	}
	cn.pending = cn.pending[:0]
}

// flushQueued hands the connection's queued engine requests to its lane,
// in order, as groups of at most the engine's MaxBatch requests.
func (s *Server) flushQueued(cn *clientConn) {
	q := cn.queued
	for len(q) > 0 {
		n := min(len(q), s.engine.cfg.MaxBatch)
		s.engine.submitGroup(int(cn.id), append([]*Request(nil), q[:n]...)) // the lane owns the copy
		q = q[n:]
	}
	clear(cn.queued)
	cn.queued = cn.queued[:0]
}

// run calls a handler or a finish function. A panic is logged with its
// stack, the partial reply is discarded and the client gets ErrInternal; a
// function that wrote nothing (and deferred nothing) also gets ErrInternal,
// so the connection's replies stay in step.
func (s *Server) run(call *Call, fn func(*Call)) {
	w := call.w
	mark := bufLen(w)
	defer func() {
		r := recover()
		if r == nil {
			switch {
			case call.later != nil && bufLen(w) != mark:
				s.log.Error().Str(logKeyCmd, call.Cmd.fullName).Msg("command handler both replied and deferred its reply")
				truncateReplies(w, mark)
			case call.later == nil && bufLen(w) == mark:
				s.log.Error().Str(logKeyCmd, call.Cmd.fullName).Msg("command handler wrote no reply")
				call.writeErrorText(ErrInternal.Error())
			}
			return
		}
		s.stats.handlerPanics.Add(1)
		call.later = nil
		truncateReplies(w, mark)
		s.log.Error().
			Str(logKeyCmd, call.Cmd.fullName).
			Int64(logKeyConn, call.conn.id).
			Str(logKeyPanic, fmt.Sprint(r)).
			Bytes(logKeyStack, debug.Stack()).
			Msg("command handler panicked")
		call.writeErrorText(ErrInternal.Error())
	}()
	fn(call)
}

// writerBuf is the index of redcon.Writer's unflushed buffer field, or -1.
var writerBuf = func() int {
	f, ok := reflect.TypeFor[redcon.Writer]().FieldByName("b")
	if !ok || f.Type != reflect.TypeFor[[]byte]() {
		return -1
	}
	return f.Index[0]
}()

// bufLen returns the length of w's unflushed replies. redcon's Buffer
// returns a copy, which run would make twice per command, of a buffer that
// grows with the pipeline; the length is read in place instead (through
// reflect: the field is unexported), falling back to Buffer if redcon's
// Writer changes shape.
func bufLen(w *redcon.Writer) int {
	if writerBuf < 0 {
		return len(w.Buffer())
	}
	return reflect.ValueOf(w).Elem().Field(writerBuf).Len()
}

// truncateReplies drops w's unflushed replies after the first mark bytes.
func truncateReplies(w *redcon.Writer, mark int) {
	if b := w.Buffer(); mark <= len(b) { // Buffer is nil after a write error
		w.SetBuffer(b[:mark])
	}
}

// Pseudo-commands naming requests that are not table entries, for logs.
var (
	refusedRequest = Command{Name: "(refused)", fullName: "(refused)"}
	unknownRequest = Command{Name: "(unknown)", fullName: "(unknown)"}
)

// unknownCommandError is Redis 7's text: the name and up to 128 bytes of
// arguments, quoted.
func unknownCommandError(args [][]byte) string {
	b := make([]byte, 0, 200)
	b = append(b, "ERR unknown command '"...)
	b = append(b, truncate(args[0], 128)...)
	b = append(b, "', with args beginning with: "...)
	n := 0
	for _, a := range args[1:] {
		if n >= 128 {
			break
		}
		a = a[:min(len(a), 128-n)]
		b = append(b, '\'')
		b = append(b, a...)
		b = append(b, '\'', ' ')
		n += len(a) + 3
	}
	return string(b)
}

func truncate(b []byte, n int) string {
	return string(b[:min(len(b), n)])
}

// arityError is Redis's text, with the full name of subcommands.
func arityError(c *Command) string {
	return "ERR wrong number of arguments for '" + c.fullName + "' command"
}
