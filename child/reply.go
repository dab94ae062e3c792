package child

import (
	"context"
	"errors"
	"math"
	"strconv"
	"strings"

	"github.com/redis/go-redis/v9"
	"github.com/tidwall/redcon"

	"github.com/globalreplica/globalreplica/crdt"
)

// Errors of the RESP endpoint. Those starting with an upper-case code word
// are written to clients as they are (see Call.WriteError).
var (
	// ErrSyntax is Redis's generic syntax error.
	ErrSyntax = errors.New("ERR syntax error")
	// ErrNotInteger and ErrNotFloat are the parse errors of ParseInt and
	// ParseFloat; they are the crdt model's, so errors.Is works across both.
	ErrNotInteger = crdt.ErrNotInteger
	ErrNotFloat   = crdt.ErrNotFloat
	// ErrNoEngine is answered by data commands of a server built without an
	// engine (tests of the connection commands).
	ErrNoEngine = errors.New("child: no engine configured")
	// ErrInternal is answered when a handler panics or writes no reply.
	ErrInternal = errors.New("ERR internal error")
	// ErrBackend prefixes the replies of errors that are not Redis errors:
	// the backing Redis is unreachable, a deadline passed, ...
	ErrBackend = errors.New("ERR backend unavailable")
)

// Call is one command being executed: what a Handler gets. A Call is valid
// only until the handler returns; handlers must not keep it. Args may be
// kept: each command's arguments are a fresh allocation.
//
// A handler writes exactly one reply (a nested array counts as one) with the
// Write methods. It runs on the connection's goroutine: pipelined commands
// of a connection run one after the other, and their replies are flushed in
// order after the pipeline's last command.
type Call struct {
	// Ctx ends when the server shuts down hard or the connection closes.
	Ctx context.Context
	// Args are the command's arguments; Args[0] is the name as the client
	// sent it (any case).
	Args [][]byte
	// Cmd is the table entry being run (the subcommand's for CLIENT SETNAME
	// and the like).
	Cmd *Command

	srv   *Server
	conn  *clientConn
	w     *redcon.Writer
	quit  bool        // close the connection after the reply
	later func(*Call) // set by Later
}

// Later defers the reply of a command whose table entry has Defers set:
// the handler has started its work and returns without writing; finish
// writes the reply (exactly one) when the server calls it, on the
// connection's goroutine, with a Call of the same command.
//
// The server calls the finish functions in request order: once the
// pipeline's last received command has been dispatched, or before a
// command that is not a Defers entry runs. So the handlers of a run of
// pipelined Defers commands all start before the first finish, and their
// backend round trips overlap. Ordering is the handler's contract: work
// started by a handler must take effect after the work of every earlier
// command of the connection (for example, by queueing backend requests in
// order on one ordered stream), as Redis runs a connection's commands in
// order. A handler either writes a reply or calls Later, not both.
//
// Later from an entry without Defers works, but gains nothing: the replies
// before it were finished before its handler ran.
func (c *Call) Later(finish func(*Call)) { c.later = finish }

// Server returns the server running the call.
func (c *Call) Server() *Server { return c.srv }

// Engine returns the server's engine. Handlers of data commands (groups
// generic, string, hash, set, sorted-set, and any command flagged write or
// readonly) always get a non-nil engine: dispatch answers ErrNoEngine for
// them when the server has none.
func (c *Call) Engine() *Engine { return c.srv.engine }

// Arg returns Args[i] as a string.
func (c *Call) Arg(i int) string { return string(c.Args[i]) }

// WriteStatus writes a simple string reply (+OK). CR and LF in s are
// replaced by spaces.
func (c *Call) WriteStatus(s string) { c.w.WriteString(s) }

// WriteString writes a simple string reply, like WriteStatus (redcon's
// name for it). For a bulk string use WriteBulkString.
func (c *Call) WriteString(s string) { c.w.WriteString(s) }

// WriteOK writes +OK.
func (c *Call) WriteOK() { c.w.WriteString("OK") }

// WriteBulk writes a bulk string reply.
func (c *Call) WriteBulk(b []byte) { c.w.WriteBulk(b) }

// WriteBulkString writes a bulk string reply.
func (c *Call) WriteBulkString(s string) { c.w.WriteBulkString(s) }

// WriteInt writes an integer reply.
func (c *Call) WriteInt(n int64) { c.w.WriteInt64(n) }

// WriteNull writes the RESP2 null bulk string ($-1), Redis's nil for a
// missing key or field.
func (c *Call) WriteNull() { c.w.WriteNull() }

// WriteNullArray writes the RESP2 null array (*-1).
func (c *Call) WriteNullArray() { c.w.WriteRaw([]byte("*-1\r\n")) }

// WriteArray writes an array header; the next n replies are its elements.
func (c *Call) WriteArray(n int) { c.w.WriteArray(n) }

// WriteBulkStrings writes an array of bulk strings.
func (c *Call) WriteBulkStrings(ss []string) {
	c.w.WriteArray(len(ss))
	for _, s := range ss {
		c.w.WriteBulkString(s)
	}
}

// WriteReply writes a value as go-redis returns script and command
// replies: nil as a null bulk, int64 (and int) as an integer, string and
// []byte as a bulk string, []any (and []string) as an array of those,
// bool as 1/0, float64 as a bulk string in Go's shortest form, an error as
// by WriteError. Anything else is an internal error. Status replies come
// back from go-redis as strings: write them with WriteStatus.
func (c *Call) WriteReply(v any) {
	switch v := v.(type) {
	case nil:
		c.w.WriteNull()
	case int64:
		c.w.WriteInt64(v)
	case int:
		c.w.WriteInt64(int64(v))
	case string:
		c.w.WriteBulkString(v)
	case []byte:
		c.w.WriteBulk(v)
	case bool:
		if v {
			c.w.WriteInt64(1)
		} else {
			c.w.WriteInt64(0)
		}
	case float64:
		c.w.WriteBulkString(strconv.FormatFloat(v, 'g', -1, 64))
	case []string:
		c.WriteBulkStrings(v)
	case []any:
		c.w.WriteArray(len(v))
		for _, e := range v {
			c.WriteReply(e)
		}
	case error:
		c.WriteError(v)
	default:
		c.srv.log.Error().Str(logKeyCmd, c.Cmd.fullName).Type("type", v).Msg("reply of an unexpected type")
		c.writeErrorText(ErrInternal.Error())
	}
}

// WriteError writes err as a Redis error reply:
//
//   - an error whose text starts with an upper-case code word and a space
//     (ERR, WRONGTYPE, NOAUTH, EXECABORT, ...) is written as is: Redis-style
//     errors of the handlers and the crdt model;
//   - a Redis error from the backing Redis (a go-redis redis.Error anywhere
//     in the chain) is written as Redis worded it, except authentication
//     failures of the child's own connection (NOAUTH, WRONGPASS, NOPERM),
//     which would mislead the client into thinking it must authenticate;
//   - any other error (network, deadline, closed client) is written as
//     "ERR backend unavailable: <text>" and logged.
func (c *Call) WriteError(err error) {
	msg, backend := errorReply(err)
	if backend {
		ev := c.srv.backendLog.Warn().Err(err).Str(logKeyCmd, c.Cmd.fullName)
		if c.conn != nil {
			ev = ev.Int64(logKeyConn, c.conn.id)
		}
		ev.Msg("command failed on the backend")
	}
	c.writeErrorText(msg)
}

// WriteErrorString writes a Redis error reply with the given text, which
// should start with a code word ("ERR ...").
func (c *Call) WriteErrorString(msg string) { c.writeErrorText(msg) }

func (c *Call) writeErrorText(msg string) {
	c.srv.stats.errorReplies.Add(1)
	c.w.WriteError(msg)
}

// replyError is an error that is its reply text.
type replyError string

func (e replyError) Error() string { return string(e) }

// errorReply maps an error to the text of its error reply; backend reports
// whether it is an unexpected (non-Redis) error.
func errorReply(err error) (msg string, backend bool) {
	if err == nil {
		return ErrInternal.Error() + ": nil error", true
	}
	var rerr redis.Error
	if errors.As(err, &rerr) {
		text := rerr.Error()
		if hasErrorCode(text) {
			switch code, _, _ := strings.Cut(text, " "); code {
			case "NOAUTH", "WRONGPASS", "NOPERM":
				return ErrBackend.Error() + ": the backing Redis rejected the child's credentials: " + text, true
			}
			return text, false
		}
	}
	text := err.Error()
	if hasErrorCode(text) {
		return text, false
	}
	return ErrBackend.Error() + ": " + text, true
}

// hasErrorCode reports whether s starts with a Redis error code: two or
// more upper-case letters (digits and '_' after the first) then a space.
func hasErrorCode(s string) bool {
	i := 0
	for i < len(s) {
		b := s[i]
		if b >= 'A' && b <= 'Z' || i > 0 && (b >= '0' && b <= '9' || b == '_') {
			i++
			continue
		}
		break
	}
	return i >= 2 && i < len(s) && s[i] == ' '
}

// ParseInt parses a 64-bit integer the way Redis does (string2ll): optional
// '-', no '+', no leading zeros, no spaces, no "-0". Errors are
// ErrNotInteger.
func ParseInt(b []byte) (int64, error) {
	n := len(b)
	if n == 0 || n > 20 {
		return 0, ErrNotInteger
	}
	if n == 1 && b[0] == '0' {
		return 0, nil
	}
	neg := false
	i := 0
	if b[0] == '-' {
		neg = true
		i = 1
		if n == 1 {
			return 0, ErrNotInteger
		}
	}
	if b[i] < '1' || b[i] > '9' {
		return 0, ErrNotInteger
	}
	var v uint64
	for ; i < n; i++ {
		d := b[i]
		if d < '0' || d > '9' {
			return 0, ErrNotInteger
		}
		if v > (math.MaxUint64-9)/10 {
			return 0, ErrNotInteger
		}
		v = v*10 + uint64(d-'0')
	}
	if neg {
		if v > uint64(math.MaxInt64)+1 {
			return 0, ErrNotInteger
		}
		return -int64(v-1) - 1, nil // v-1 <= MaxInt64 here
	}
	if v > math.MaxInt64 {
		return 0, ErrNotInteger
	}
	return int64(v), nil
}

// ParseFloat parses a double the way Redis does (string2d): strtod syntax
// without leading spaces, "inf" and "-inf" allowed, NaN and overflow
// refused. Errors are ErrNotFloat.
func ParseFloat(b []byte) (float64, error) {
	if len(b) == 0 || len(b) > 5000 {
		return 0, ErrNotFloat
	}
	switch b[0] {
	case ' ', '\t', '\n', '\v', '\f', '\r':
		return 0, ErrNotFloat
	}
	s := string(b)
	if strings.ContainsRune(s, '_') {
		return 0, ErrNotFloat // Go accepts digit separators, strtod does not
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil || math.IsNaN(f) {
		return 0, ErrNotFloat
	}
	return f, nil
}
