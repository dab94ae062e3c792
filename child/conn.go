package child

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/tidwall/redcon"
)

// This file holds a client connection: its state (clientConn) and the
// request framer (guardConn, framer) that sits between the socket and
// redcon. The framer reads the client's bytes before redcon does and
//
//   - enforces the request limits without buffering what it refuses: an
//     argument above MaxValueBytes, a request above MaxRequestBytes or with
//     more than MaxArgs arguments is discarded as it streams in and answered
//     with an error, and the connection stays usable;
//   - answers malformed input with Redis's protocol error text and closes
//     the connection, after the replies of the commands before it;
//   - turns inline (telnet-style) commands into RESP arrays with Redis's
//     quoting rules, so redcon only ever parses well-formed RESP arrays.

// Protocol limits that are not configurable, as in Redis.
const (
	// maxInlineBytes is Redis's PROTO_INLINE_MAX_SIZE.
	maxInlineBytes = 64 << 10
	// protoMaxBulkBytes is Redis's default proto-max-bulk-len: a bulk
	// length above it (or above MaxValueBytes when that is larger) is a
	// protocol error rather than a refused value.
	protoMaxBulkBytes = 512 << 20
	// maxHeaderLine bounds the "*<n>\r\n" and "$<n>\r\n" lines.
	maxHeaderLine = 32
	// readBufferSize is the socket read size of a connection.
	readBufferSize = 16 << 10
	// errorWriteTimeout bounds writing the protocol error before a close.
	errorWriteTimeout = time.Second
)

// protocolError is a malformed request: the connection gets
// "-ERR Protocol error: <msg>" and is closed.
type protocolError struct{ msg string }

func (e *protocolError) Error() string { return "Protocol error: " + e.msg }

var (
	errInvalidMultibulkLength = &protocolError{"invalid multibulk length"}
	errInvalidBulkLength      = &protocolError{"invalid bulk length"}
	errTooBigInline           = &protocolError{"too big inline request"}
	errUnbalancedQuotes       = &protocolError{"unbalanced quotes in request"}

	// errDraining ends a connection's reads when the server shuts down.
	errDraining = errors.New("child: server shutting down")
)

type frameState uint8

const (
	stStart    frameState = iota // before a request
	stMultiLen                   // in "*<n>\r\n"
	stBulkLen                    // in "$<n>\r\n"
	stBulkData                   // in a bulk's payload
	stBulkCRLF                   // in the CRLF after a payload
	stInline                     // in an inline command line
	stFailed                     // after a protocol error
)

// refusal is a request the framer emptied because it broke a limit:
// dispatch answers err instead of running request number seq.
type refusal struct {
	seq uint64
	err error
}

// framer is the request state machine of one connection. It is fed the
// bytes read from the socket and appends well-formed RESP arrays to its
// output; it never holds more than a header or an inline line of input.
// Its output for a given input does not depend on how the input is split
// into reads.
type framer struct {
	maxArgs    int
	maxValue   int
	maxRequest int
	maxBulk    int // protocol limit on a bulk length

	st       frameState
	line     []byte // header line or inline line being read
	argsLeft int    // bulks left in the current request
	dataLeft int    // payload bytes left in the current bulk
	crlfLeft int    // bytes of the CRLF after the payload left to check
	reqBytes int    // payload bytes of the current request
	// mode of the current request: emit it, substitute empty bulks for its
	// remaining arguments (the header was emitted), or drop its remaining
	// arguments (a complete placeholder request was emitted).
	mode     frameMode
	seq      uint64    // requests emitted
	refusals []refusal // refused requests not yet dispatched, in order
	failed   error     // the protocol error, in stFailed
}

type frameMode uint8

const (
	modeEmit frameMode = iota
	modeSubst
	modeDrop
)

// emptyBulk replaces a refused argument; placeholderRequest is a complete
// one-argument request standing in for a refused one.
var (
	emptyBulk          = []byte("$0\r\n\r\n")
	placeholderRequest = []byte("*1\r\n$0\r\n\r\n")
)

func newFramer(maxArgs, maxValue, maxRequest int) *framer {
	f := &framer{maxArgs: maxArgs, maxValue: maxValue, maxRequest: maxRequest, maxBulk: protoMaxBulkBytes}
	if maxValue > f.maxBulk {
		f.maxBulk = maxValue
	}
	return f
}

// feed consumes in and appends the framed requests to out. After a
// protocol error it consumes nothing more and returns the error with the
// output framed before it.
func (f *framer) feed(in, out []byte) ([]byte, error) {
	for len(in) > 0 {
		switch f.st {
		case stFailed:
			return out, f.failed
		case stStart:
			f.line = f.line[:0]
			if in[0] == '*' {
				f.st = stMultiLen
				in = in[1:]
			} else {
				f.st = stInline
			}
		case stMultiLen, stBulkLen:
			if f.st == stBulkLen && len(f.line) == 0 && in[0] != '$' {
				return f.fail(out, &protocolError{"expected '$', got '" + string(in[:1]) + "'"})
			}
			line, rest, done, err := f.readLine(in, maxHeaderLine)
			in = rest
			if err != nil {
				return f.fail(out, err)
			}
			if !done {
				continue
			}
			if f.st == stMultiLen {
				out, err = f.multibulkHeader(line, out)
			} else {
				out, err = f.bulkHeader(line[1:], out)
			}
			f.line = f.line[:0]
			if err != nil {
				return f.fail(out, err)
			}
		case stBulkData:
			n := min(f.dataLeft, len(in))
			if f.mode == modeEmit {
				out = append(out, in[:n]...)
			}
			f.dataLeft -= n
			in = in[n:]
			if f.dataLeft == 0 {
				f.st = stBulkCRLF
				f.crlfLeft = 2
			}
		case stBulkCRLF:
			want := byte('\r')
			if f.crlfLeft == 1 {
				want = '\n'
			}
			if in[0] != want && f.mode == modeEmit {
				return f.fail(out, errInvalidBulkLength)
			}
			in = in[1:]
			f.crlfLeft--
			if f.crlfLeft == 0 {
				if f.mode == modeEmit {
					out = append(out, '\r', '\n')
				}
				out = f.endBulk(out)
			}
		case stInline:
			line, rest, done, err := f.readLine(in, maxInlineBytes)
			in = rest
			if err != nil {
				return f.fail(out, err)
			}
			if done {
				out, err = f.inline(line, out)
				f.line = f.line[:0]
				if cap(f.line) > 4<<10 {
					f.line = nil
				}
				if err != nil {
					return f.fail(out, err)
				}
			}
		}
	}
	return out, nil
}

func (f *framer) fail(out []byte, err error) ([]byte, error) {
	f.st = stFailed
	f.failed = err
	return out, err
}

// readLine accumulates a line up to '\n'. For header lines it returns the
// content between the type byte and "\r\n"; for inline lines the content
// without the line ending.
func (f *framer) readLine(in []byte, limit int) (line, rest []byte, done bool, err error) {
	for i, b := range in {
		if b == '\n' {
			f.line = append(f.line, in[:i]...)
			rest = in[i+1:]
			line = f.line
			if f.st == stInline {
				if n := len(line); n > 0 && line[n-1] == '\r' {
					line = line[:n-1]
				}
				return line, rest, true, nil
			}
			if n := len(line); n == 0 || line[n-1] != '\r' {
				return nil, rest, false, f.lineError()
			}
			return line[:len(line)-1], rest, true, nil
		}
		if len(f.line)+i >= limit {
			return nil, nil, false, f.lineError()
		}
	}
	f.line = append(f.line, in...)
	if len(f.line) > limit {
		return nil, nil, false, f.lineError()
	}
	return nil, nil, false, nil
}

func (f *framer) lineError() error {
	switch f.st {
	case stMultiLen:
		return errInvalidMultibulkLength
	case stBulkLen:
		return errInvalidBulkLength
	default:
		return errTooBigInline
	}
}

// multibulkHeader handles "*<count>".
func (f *framer) multibulkHeader(line, out []byte) ([]byte, error) {
	count, err := ParseInt(line)
	if err != nil || count > 1<<31-1 {
		return out, errInvalidMultibulkLength
	}
	f.st = stStart
	if count <= 0 {
		return out, nil // Redis ignores empty requests
	}
	f.reqBytes = 0
	f.argsLeft = int(count)
	f.st = stBulkLen
	if int(count) > f.maxArgs {
		f.refuse(fmt.Errorf("ERR too many arguments (max %d)", f.maxArgs))
		f.mode = modeDrop
		out = append(out, placeholderRequest...)
		f.seq++
		return out, nil
	}
	f.mode = modeEmit
	out = append(out, '*')
	out = strconv.AppendInt(out, count, 10)
	return append(out, '\r', '\n'), nil
}

// bulkHeader handles "$<length>" (line is what follows the '$').
func (f *framer) bulkHeader(line, out []byte) ([]byte, error) {
	size, err := ParseInt(line)
	if err != nil || size < 0 || size > int64(f.maxBulk) {
		return out, errInvalidBulkLength
	}
	n := int(size)
	f.dataLeft = n
	f.st = stBulkData
	if f.mode == modeEmit {
		switch {
		case n > f.maxValue:
			f.refuse(fmt.Errorf("ERR value is too large (max %d bytes)", f.maxValue))
			f.mode = modeSubst
		case f.reqBytes+n > f.maxRequest:
			f.refuse(fmt.Errorf("ERR request is too large (max %d bytes)", f.maxRequest))
			f.mode = modeSubst
		}
	}
	f.reqBytes += n
	switch f.mode {
	case modeEmit:
		out = append(out, '$')
		out = strconv.AppendInt(out, size, 10)
		out = append(out, '\r', '\n')
	case modeSubst:
		out = append(out, emptyBulk...)
	case modeDrop:
	}
	if n == 0 {
		f.st = stBulkCRLF
		f.crlfLeft = 2
	}
	return out, nil
}

// endBulk finishes a bulk and, after the last one, the request.
func (f *framer) endBulk(out []byte) []byte {
	f.argsLeft--
	if f.argsLeft > 0 {
		f.st = stBulkLen
		return out
	}
	if f.mode != modeDrop {
		f.seq++
	}
	f.mode = modeEmit
	f.st = stStart
	return out
}

// refuse records that the request being framed (number seq+1) is refused.
func (f *framer) refuse(err error) {
	f.refusals = append(f.refusals, refusal{seq: f.seq + 1, err: err})
}

// inline frames an inline command line.
func (f *framer) inline(line, out []byte) ([]byte, error) {
	f.st = stStart
	args, ok := splitArgs(line)
	if !ok {
		return out, errUnbalancedQuotes
	}
	if len(args) == 0 {
		return out, nil
	}
	total := 0
	for _, a := range args {
		total += len(a)
		if len(a) > f.maxValue {
			f.refuse(fmt.Errorf("ERR value is too large (max %d bytes)", f.maxValue))
			return f.placeholder(out), nil
		}
	}
	switch {
	case len(args) > f.maxArgs:
		f.refuse(fmt.Errorf("ERR too many arguments (max %d)", f.maxArgs))
		return f.placeholder(out), nil
	case total > f.maxRequest:
		f.refuse(fmt.Errorf("ERR request is too large (max %d bytes)", f.maxRequest))
		return f.placeholder(out), nil
	}
	out = append(out, '*')
	out = strconv.AppendInt(out, int64(len(args)), 10)
	out = append(out, '\r', '\n')
	for _, a := range args {
		out = redcon.AppendBulk(out, a)
	}
	f.seq++
	return out, nil
}

func (f *framer) placeholder(out []byte) []byte {
	f.seq++
	return append(out, placeholderRequest...)
}

// takeRefusal returns the refusal of request seq, if it was refused.
func (f *framer) takeRefusal(seq uint64) error {
	if len(f.refusals) == 0 || f.refusals[0].seq != seq {
		return nil
	}
	err := f.refusals[0].err
	f.refusals[0] = refusal{}
	f.refusals = f.refusals[1:]
	return err
}

// splitArgs splits an inline command line like Redis's sdssplitargs:
// blanks separate arguments; "double quotes" take \n \r \t \b \a \xHH and
// \<any> escapes; 'single quotes' take \' only; a closing quote must be
// followed by a blank or the end. ok is false for unbalanced quotes. As in
// C, a NUL byte ends the line.
func splitArgs(line []byte) (args [][]byte, ok bool) {
	isSpace := func(c byte) bool { return c == ' ' || c >= '\t' && c <= '\r' }
	at := func(i int) byte {
		if i < len(line) {
			return line[i]
		}
		return 0
	}
	p := 0
	for {
		for at(p) != 0 && isSpace(at(p)) {
			p++
		}
		if at(p) == 0 {
			return args, true
		}
		var cur []byte
		inq, insq, done := false, false, false
		for !done {
			c := at(p)
			switch {
			case inq:
				switch {
				case c == '\\' && at(p+1) == 'x' && isHex(at(p+2)) && isHex(at(p+3)):
					cur = append(cur, unhex(at(p+2))<<4|unhex(at(p+3)))
					p += 3
				case c == '\\' && at(p+1) != 0:
					p++
					e := at(p)
					switch e {
					case 'n':
						e = '\n'
					case 'r':
						e = '\r'
					case 't':
						e = '\t'
					case 'b':
						e = '\b'
					case 'a':
						e = '\a'
					}
					cur = append(cur, e)
				case c == '"':
					if n := at(p + 1); n != 0 && !isSpace(n) {
						return nil, false
					}
					done = true
				case c == 0:
					return nil, false
				default:
					cur = append(cur, c)
				}
			case insq:
				switch {
				case c == '\\' && at(p+1) == '\'':
					p++
					cur = append(cur, '\'')
				case c == '\'':
					if n := at(p + 1); n != 0 && !isSpace(n) {
						return nil, false
					}
					done = true
				case c == 0:
					return nil, false
				default:
					cur = append(cur, c)
				}
			default:
				switch c {
				case ' ', '\n', '\r', '\t', 0:
					done = true
				case '"':
					inq = true
				case '\'':
					insq = true
				default:
					cur = append(cur, c)
				}
			}
			if at(p) != 0 {
				p++
			}
		}
		if cur == nil {
			cur = []byte{}
		}
		args = append(args, cur)
	}
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	default:
		return c - 'A' + 10
	}
}

// guardConn is the net.Conn redcon reads from: the socket with the framer
// in between. It also counts the bytes in and out.
//
// redcon reads only when it holds no complete request, after it ran the
// requests it had and flushed their replies. So when Read finds a pending
// protocol error, every request before the error has been answered: the
// error reply goes out right behind their replies, in order.
type guardConn struct {
	net.Conn
	fr       *framer
	stats    *serverStats
	in       []byte
	out      []byte // framed bytes not yet returned to redcon
	outOff   int
	fatal    error // protocol error to answer once out is consumed
	readErr  error // socket error after the last bytes
	draining atomic.Bool
}

func (g *guardConn) Read(p []byte) (int, error) {
	for {
		if g.outOff < len(g.out) {
			n := copy(p, g.out[g.outOff:])
			g.outOff += n
			return n, nil
		}
		g.out, g.outOff = g.out[:0], 0
		if cap(g.out) > 4*readBufferSize {
			g.out = nil // do not keep a large request's buffer
		}
		if g.fatal != nil {
			var perr *protocolError
			if errors.As(g.fatal, &perr) {
				_ = g.SetWriteDeadline(time.Now().Add(errorWriteTimeout))
				_, _ = g.Conn.Write(redcon.AppendError(nil, "ERR "+perr.Error()))
			}
			return 0, g.fatal
		}
		if g.readErr != nil {
			return 0, g.readErr
		}
		if g.draining.Load() {
			return 0, errDraining
		}
		n, err := g.Conn.Read(g.in)
		if n > 0 {
			g.stats.netInput.Add(int64(n))
			g.out, g.fatal = g.fr.feed(g.in[:n], g.out)
		}
		if err != nil {
			if g.draining.Load() {
				err = errDraining
			}
			g.readErr = err
		}
	}
}

func (g *guardConn) Write(p []byte) (int, error) {
	n, err := g.Conn.Write(p)
	g.stats.netOutput.Add(int64(n))
	return n, err
}

// drain makes the connection end at its next read: an idle connection at
// once, a busy one after the commands it has received are answered.
func (g *guardConn) drain() {
	g.draining.Store(true)
	_ = g.SetReadDeadline(time.Now())
}

// clientConn is the state of one client connection.
type clientConn struct {
	id      int64
	addr    string
	laddr   string
	fd      int
	created time.Time
	ctx     context.Context
	cancel  context.CancelFunc
	nc      *guardConn  // nil for connections not made by the listener (tests)
	rc      redcon.Conn // nil in tests that dispatch directly

	// Owned by the connection's goroutine.
	authenticated bool
	closing       bool           // QUIT: run nothing more
	seq           uint64         // requests dispatched
	call          Call           // reused by every command of the connection
	pending       []pendingReply // replies waiting behind a deferred one
	queued        []*Request     // engine requests not yet handed to the lane
	scratch       *redcon.Writer // captures replies that run behind deferred ones

	// Read by CLIENT LIST and INFO from other connections.
	lastCmd    atomic.Pointer[Command]
	lastActive atomic.Int64 // unix nanoseconds
	mu         sync.Mutex
	name       string
	libName    string
	libVer     string
}

func (cn *clientConn) scratchWriter() *redcon.Writer {
	if cn.scratch == nil {
		cn.scratch = redcon.NewWriter(io.Discard)
	}
	return cn.scratch
}

func (cn *clientConn) setName(name string) {
	cn.mu.Lock()
	cn.name = name
	cn.mu.Unlock()
}

func (cn *clientConn) getName() string {
	cn.mu.Lock()
	defer cn.mu.Unlock()
	return cn.name
}

// infoLine renders the connection in CLIENT LIST / CLIENT INFO format
// (Redis 7.2 fields; memory and buffer fields are not tracked and are 0).
func (cn *clientConn) infoLine(now time.Time) string {
	cn.mu.Lock()
	name, libName, libVer := cn.name, cn.libName, cn.libVer
	cn.mu.Unlock()
	cmd := "NULL"
	if c := cn.lastCmd.Load(); c != nil {
		cmd = c.fullName
	}
	last := time.Unix(0, cn.lastActive.Load())
	b := make([]byte, 0, 320)
	b = fmt.Appendf(b, "id=%d addr=%s laddr=%s fd=%d name=%s age=%d idle=%d flags=N db=0 sub=0 psub=0 ssub=0 multi=-1 "+
		"qbuf=0 qbuf-free=0 argv-mem=0 multi-mem=0 rbs=%d rbp=0 obl=0 oll=0 omem=0 tot-mem=0 events=r cmd=%s user=default "+
		"redir=-1 resp=2 lib-name=%s lib-ver=%s\n",
		cn.id, cn.addr, cn.laddr, cn.fd, name, int64(now.Sub(cn.created)/time.Second), int64(now.Sub(last)/time.Second),
		readBufferSize, cmd, libName, libVer)
	return string(b)
}

// fdOf returns the file descriptor of a TCP connection, or -1.
func fdOf(c net.Conn) int {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return -1
	}
	raw, err := tc.SyscallConn()
	if err != nil {
		return -1
	}
	fd := -1
	_ = raw.Control(func(f uintptr) { fd = int(f) })
	return fd
}

var _ io.ReadWriter = (*guardConn)(nil)
