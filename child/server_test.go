package child

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/internal/testredis"
)

// Test-only commands, registered for this test binary: a handler that
// panics halfway through a reply, one that writes nothing, one that waits
// (for shutdown tests) and a data command (for the nil-engine check).
func init() {
	register(
		Command{Name: "x-test-panic", Arity: 1, Group: GroupServer, Summary: "test: panics", Handler: func(c *Call) {
			c.WriteArray(3)
			c.WriteBulkString("partial")
			panic("x-test-panic")
		}},
		Command{Name: "x-test-noreply", Arity: 1, Group: GroupServer, Summary: "test: writes no reply", Handler: func(*Call) {}},
		Command{Name: "x-test-sleep", Arity: 2, Group: GroupServer, Summary: "test: sleeps ms milliseconds", Handler: func(c *Call) {
			ms, err := ParseInt(c.Args[1])
			if err != nil {
				c.WriteError(err)
				return
			}
			ms = min(max(ms, 0), 60_000)
			select {
			case <-time.After(time.Duration(ms) * time.Millisecond):
				c.WriteOK()
			case <-c.Ctx.Done():
				c.WriteError(c.Ctx.Err())
			}
		}},
		Command{Name: "x-test-later", Arity: 3, Defers: true, Group: GroupServer, Summary: "test: answers value after ms, deferred",
			Handler: func(c *Call) {
				ms, err := ParseInt(c.Args[1])
				if err != nil {
					c.WriteError(err)
					return
				}
				v := c.Arg(2)
				done := make(chan string, 1)
				go func() {
					time.Sleep(time.Duration(min(max(ms, 0), 5000)) * time.Millisecond)
					done <- v
				}()
				c.Later(func(c *Call) {
					if v := <-done; v == "panic" {
						panic("x-test-later")
					}
					c.WriteBulkString(v)
				})
			}},
		Command{Name: "x-test-data", Arity: 2, Flags: []string{FlagReadonly}, FirstKey: 1, LastKey: 1, Step: 1,
			Group: GroupString, Summary: "test: needs the engine", Handler: func(c *Call) { c.WriteOK() }},
	)
}

// respTestServer runs a server without an engine on a free port for the
// test and returns it with its address.
func respTestServer(t testing.TB, cfg Config) (*Server, string) {
	t.Helper()
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	srv, err := NewServer(cfg, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil && !errors.Is(err, ErrServerClosed) {
			t.Errorf("Run: %v", err)
		}
	})
	return srv, srv.Addr().String()
}

func respTestClient(t testing.TB, opt *redis.Options) *redis.Client {
	t.Helper()
	rdb := redis.NewClient(opt)
	t.Cleanup(func() { _ = rdb.Close() })
	return rdb
}

// rawConn is a plain TCP connection for byte-exact protocol checks.
type rawConn struct {
	t testing.TB
	c net.Conn
	r *bufio.Reader
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, c: c, r: bufio.NewReader(c)}
}

func (rc *rawConn) send(s string) {
	rc.t.Helper()
	if _, err := rc.c.Write([]byte(s)); err != nil {
		rc.t.Fatal(err)
	}
}

// expect reads exactly len(want) bytes and compares them.
func (rc *rawConn) expect(want string) {
	rc.t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, len(want))
	n, err := io.ReadFull(rc.r, got)
	if err != nil || string(got) != want {
		rc.t.Fatalf("read %q (err %v), want %q", got[:n], err, want)
	}
}

// expectEOF checks that the server closed the connection.
func (rc *rawConn) expectEOF() {
	rc.t.Helper()
	_ = rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := rc.r.ReadByte()
	if err == nil {
		rest, _ := rc.r.Peek(rc.r.Buffered())
		rc.t.Fatalf("read %q, want the connection closed", append([]byte{b}, rest...))
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		rc.t.Fatal("connection still open, want it closed")
	}
}

// roundTrip sends a command and returns its reply line(s) as raw bytes,
// reading one full RESP reply.
func (rc *rawConn) roundTrip(cmd string) string {
	rc.t.Helper()
	rc.send(cmd)
	_ = rc.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	var b bytes.Buffer
	if err := readRESP(rc.r, &b); err != nil {
		rc.t.Fatalf("%q: %v (read %q)", cmd, err, b.String())
	}
	return b.String()
}

// readRESP copies one RESP2 reply from r to w.
func readRESP(r *bufio.Reader, w *bytes.Buffer) error {
	line, err := r.ReadString('\n')
	w.WriteString(line)
	if err != nil {
		return err
	}
	if len(line) < 3 {
		return fmt.Errorf("short line %q", line)
	}
	switch line[0] {
	case '+', '-', ':':
		return nil
	case '$':
		n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
		if err != nil || n < 0 {
			return err
		}
		buf := make([]byte, n+2)
		if _, err := io.ReadFull(r, buf); err != nil {
			return err
		}
		w.Write(buf)
		return nil
	case '*':
		n, err := strconv.Atoi(strings.TrimSpace(line[1:]))
		if err != nil {
			return err
		}
		for range max(n, 0) {
			if err := readRESP(r, w); err != nil {
				return err
			}
		}
		return nil
	default:
		return fmt.Errorf("bad reply %q", line)
	}
}

func TestServerGoRedisResp3Fallback(t *testing.T) {
	_, addr := respTestServer(t, Config{})
	ctx := context.Background()
	// Protocol 3 is go-redis v9's default: HELLO 3 gets NOPROTO and the
	// client falls back to RESP2, then sends CLIENT SETNAME and SETINFO.
	rdb := respTestClient(t, &redis.Options{Addr: addr, ClientName: "app-1", Protocol: 3})
	if got, err := rdb.Ping(ctx).Result(); err != nil || got != "PONG" {
		t.Fatalf("PING = %q, %v", got, err)
	}
	if got, err := rdb.Echo(ctx, "hello\r\nworld").Result(); err != nil || got != "hello\r\nworld" {
		t.Fatalf("ECHO = %q, %v", got, err)
	}
	if got, err := rdb.ClientGetName(ctx).Result(); err != nil || got != "app-1" {
		t.Fatalf("CLIENT GETNAME = %q, %v", got, err)
	}
	info, err := rdb.ClientInfo(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if info.Name != "app-1" || !strings.HasPrefix(info.LibName, "go-redis") || info.LibVer == "" || info.DB != 0 || info.Resp != 2 {
		t.Fatalf("CLIENT INFO = %+v", info)
	}
	if err := rdb.Do(ctx, "HELLO", "3").Err(); err == nil || err.Error() != "NOPROTO unsupported protocol version" {
		t.Fatalf("HELLO 3: %v", err)
	}
	hello, err := rdb.Do(ctx, "HELLO", "2").Slice()
	if err != nil {
		t.Fatal(err)
	}
	want := []any{"server", "redis", "version", RedisVersion, "proto", int64(2), "id", hello[7], "mode", "standalone", "role", "master", "modules", []any{}}
	if fmt.Sprint(hello) != fmt.Sprint(want) {
		t.Fatalf("HELLO 2 = %v, want %v", hello, want)
	}
	if _, ok := hello[7].(int64); !ok {
		t.Fatalf("HELLO id = %T", hello[7])
	}

	// RESP2 from the start works the same.
	rdb2 := respTestClient(t, &redis.Options{Addr: addr, Protocol: 2})
	if err := rdb2.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestServerPassword(t *testing.T) {
	_, addr := respTestServer(t, Config{Password: "s3cret"})
	ctx := context.Background()

	rdb := respTestClient(t, &redis.Options{Addr: addr, Password: "s3cret", ClientName: "authed"})
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING with password: %v", err)
	}
	if got, _ := rdb.ClientGetName(ctx).Result(); got != "authed" {
		t.Fatalf("CLIENT GETNAME = %q", got)
	}
	acl := respTestClient(t, &redis.Options{Addr: addr, Username: "default", Password: "s3cret"})
	if err := acl.Ping(ctx).Err(); err != nil {
		t.Fatalf("PING with user default: %v", err)
	}

	noPass := respTestClient(t, &redis.Options{Addr: addr, MaxRetries: -1})
	if err := noPass.Ping(ctx).Err(); err == nil || err.Error() != "NOAUTH Authentication required." {
		t.Fatalf("PING without password: %v", err)
	}
	wrong := respTestClient(t, &redis.Options{Addr: addr, Password: "nope", MaxRetries: -1})
	if err := wrong.Ping(ctx).Err(); err == nil || !strings.Contains(err.Error(), "WRONGPASS invalid username-password pair or user is disabled.") {
		t.Fatalf("PING with a wrong password: %v", err)
	}

	rc := dialRaw(t, addr)
	steps := []struct{ cmd, want string }{
		{"PING\r\n", "-NOAUTH Authentication required.\r\n"},
		{"ECHO\r\n", "-ERR wrong number of arguments for 'echo' command\r\n"},
		{"CLIENT NOPE\r\n", "-ERR unknown subcommand 'NOPE'. Try CLIENT HELP.\r\n"},
		{"HELLO 2\r\n", "-" + errHelloNoAuth + "\r\n"},
		{"HELLO 2 AUTH default bad\r\n", "-" + errWrongPass + "\r\n"},
		{"AUTH bad\r\n", "-" + errWrongPass + "\r\n"},
		{"AUTH someone s3cret\r\n", "-" + errWrongPass + "\r\n"},
		{"AUTH a b c\r\n", "-ERR syntax error\r\n"},
		{"FLUSHALL\r\n", "-" + refusalError(commandTable["flushall"]) + "\r\n"},
		{"AUTH s3cret\r\n", "+OK\r\n"},
		{"PING\r\n", "+PONG\r\n"},
		{"RESET\r\n", "+RESET\r\n"},
		{"PING\r\n", "-NOAUTH Authentication required.\r\n"},
		{"AUTH default s3cret\r\n", "+OK\r\n"},
		{"PING\r\n", "+PONG\r\n"},
	}
	for _, s := range steps {
		if got := rc.roundTrip(s.cmd); got != s.want {
			t.Fatalf("%q = %q, want %q", s.cmd, got, s.want)
		}
	}
	rc2 := dialRaw(t, addr)
	if got := rc2.roundTrip("HELLO 2 AUTH default s3cret SETNAME n1\r\n"); !strings.HasPrefix(got, "*14\r\n$6\r\nserver\r\n") {
		t.Fatalf("HELLO AUTH = %q", got)
	}
	if got := rc2.roundTrip("CLIENT GETNAME\r\n"); got != "$2\r\nn1\r\n" {
		t.Fatalf("CLIENT GETNAME = %q", got)
	}
	if got := rc2.roundTrip("QUIT\r\n"); got != "+OK\r\n" {
		t.Fatalf("QUIT = %q", got)
	}
	rc2.expectEOF()
}

func TestServerNoPasswordAuth(t *testing.T) {
	_, addr := respTestServer(t, Config{})
	rc := dialRaw(t, addr)
	for _, s := range []struct{ cmd, want string }{
		{"AUTH x\r\n", "-" + errAuthNoPass + "\r\n"},
		{"AUTH default anything\r\n", "+OK\r\n"},
		{"AUTH other anything\r\n", "-" + errWrongPass + "\r\n"},
		{"HELLO 2 AUTH default x\r\n", "*14\r\n$6\r\nserver\r\n$5\r\nredis\r\n$7\r\nversion\r\n$5\r\n7.2.0\r\n$5\r\nproto\r\n:2\r\n$2\r\nid\r\n:1\r\n" +
			"$4\r\nmode\r\n$10\r\nstandalone\r\n$4\r\nrole\r\n$6\r\nmaster\r\n$7\r\nmodules\r\n*0\r\n"},
	} {
		want := s.want
		got := rc.roundTrip(s.cmd)
		if strings.HasPrefix(s.cmd, "HELLO") { // the id varies
			got = strings.Replace(got, "$2\r\nid\r\n:"+strings.Split(strings.Split(got, "$2\r\nid\r\n:")[1], "\r\n")[0], "$2\r\nid\r\n:1", 1)
		}
		if got != want {
			t.Fatalf("%q = %q, want %q", s.cmd, got, want)
		}
	}
}

func TestServerErrorsLikeRedis(t *testing.T) {
	_, addr := respTestServer(t, Config{})
	rc := dialRaw(t, addr)
	long := strings.Repeat("x", 200)
	for _, s := range []struct{ cmd, want string }{
		{"FOO a b\r\n", "-ERR unknown command 'FOO', with args beginning with: 'a' 'b' \r\n"},
		{"foo\r\n", "-ERR unknown command 'foo', with args beginning with: \r\n"},
		{"*2\r\n$3\r\nfoo\r\n$4\r\na\r\nb\r\n", "-ERR unknown command 'foo', with args beginning with: 'a  b' \r\n"},
		{"FOO " + long + " b\r\n", "-ERR unknown command 'FOO', with args beginning with: '" + long[:128] + "' \r\n"},
		{"x-test-data\r\n", "-ERR wrong number of arguments for 'x-test-data' command\r\n"},
		{"PING a b\r\n", "-ERR wrong number of arguments for 'ping' command\r\n"},
		{"ECHO\r\n", "-ERR wrong number of arguments for 'echo' command\r\n"},
		{"CLIENT\r\n", "-ERR wrong number of arguments for 'client' command\r\n"},
		{"CLIENT SETNAME\r\n", "-ERR wrong number of arguments for 'client|setname' command\r\n"},
		{"client nope\r\n", "-ERR unknown subcommand 'nope'. Try CLIENT HELP.\r\n"},
		{"COMMAND FOO\r\n", "-ERR unknown subcommand 'FOO'. Try COMMAND HELP.\r\n"},
		{"SELECT x\r\n", "-ERR value is not an integer or out of range\r\n"},
		{"SELECT 0\r\n", "+OK\r\n"},
		{"SELECT 1\r\n", "-ERR SELECT is not supported in active-active mode: a global instance has one database (0)\r\n"},
		{"HELLO x\r\n", "-ERR Protocol version is not an integer or out of range\r\n"},
		{"HELLO 4\r\n", "-NOPROTO unsupported protocol version\r\n"},
		{"HELLO 2 FOO\r\n", "-ERR Syntax error in HELLO option 'FOO'\r\n"},
		{"HELLO 2 SETNAME\r\n", "-ERR Syntax error in HELLO option 'SETNAME'\r\n"},
		{"CLIENT SETNAME \"a b\"\r\n", "-" + errClientName + "\r\n"},
		{"CLIENT SETINFO lib-x y\r\n", "-ERR Unrecognized option 'lib-x'\r\n"},
		{"CLIENT SETINFO LIB-NAME \"a b\"\r\n", "-ERR LIB-NAME cannot contain spaces, newlines or special characters.\r\n"},
		{"CLIENT LIST TYPE foo\r\n", "-ERR Unknown client type 'foo'\r\n"},
		{"CLIENT LIST ID x\r\n", "-ERR Invalid client ID\r\n"},
		{"CLIENT LIST FOO\r\n", "-ERR syntax error\r\n"},
		{"COMMAND COUNT x\r\n", "-ERR wrong number of arguments for 'command|count' command\r\n"},
		{"COMMAND LIST FILTERBY x y\r\n", "-ERR syntax error\r\n"},
		{"COMMAND GETKEYS nope a\r\n", "-ERR Invalid command specified\r\n"},
		{"COMMAND GETKEYS ping x\r\n", "-ERR The command has no key arguments\r\n"},
		{"COMMAND GETKEYS x-test-data a b\r\n", "-ERR Invalid number of arguments specified for command\r\n"},
		{"COMMAND GETKEYS x-test-data k\r\n", "*1\r\n$1\r\nk\r\n"},
		{"FLUSHALL\r\n", "-ERR FLUSHALL is not supported in active-active mode: " + reasonFlush + "\r\n"},
		{"flushdb async\r\n", "-ERR FLUSHDB is not supported in active-active mode: " + reasonFlush + "\r\n"},
		{"x-test-data k\r\n", "-ERR backend unavailable: child: no engine configured\r\n"},
		{"PING\r\n", "+PONG\r\n"},
		{"PING hi\r\n", "$2\r\nhi\r\n"},
		{"ECHO \"a\\x41\\n\"\r\n", "$3\r\naA\n\r\n"},
		{"ROLE\r\n", "*3\r\n$6\r\nmaster\r\n:0\r\n*0\r\n"},
		{"CLIENT LIST TYPE pubsub\r\n", "$0\r\n\r\n"},
		{"CLIENT GETNAME\r\n", "$-1\r\n"},
		{"COMMAND INFO nope\r\n", "*1\r\n$-1\r\n"},
		{"COMMAND INFO flushall\r\n", "*1\r\n$-1\r\n"},
		{"COMMAND DOCS nope\r\n", "*0\r\n"},
	} {
		if got := rc.roundTrip(s.cmd); got != s.want {
			t.Errorf("%q = %q, want %q", s.cmd, got, s.want)
		}
	}
}

func TestServerRefusedCommands(t *testing.T) {
	_, addr := respTestServer(t, Config{})
	rdb := respTestClient(t, &redis.Options{Addr: addr})
	ctx := context.Background()
	n := 0
	for _, c := range Commands() {
		if c.Refused == "" {
			continue
		}
		n++
		want := "ERR " + strings.ToUpper(c.Name) + " is not supported in active-active mode: " + c.Refused
		if err := rdb.Do(ctx, c.Name, "k", "v").Err(); err == nil || err.Error() != want {
			t.Errorf("%s: %v, want %q", c.Name, err, want)
		}
	}
	for _, name := range []string{"flushall", "rename", "eval", "blpop", "multi", "lpush", "xadd", "publish", "spop", "zpopmin", "getex", "config", "sunionstore"} {
		if c := commandTable[name]; c == nil || c.Refused == "" {
			t.Errorf("%s is not refused", name)
		}
	}
	if n < 100 {
		t.Errorf("only %d refused commands", n)
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
}

func TestServerPipelining(t *testing.T) {
	_, addr := respTestServer(t, Config{})
	ctx := context.Background()
	rdb := respTestClient(t, &redis.Options{Addr: addr})
	pipe := rdb.Pipeline()
	var cmds []*redis.StringCmd
	for i := range 1000 {
		cmds = append(cmds, rdb.Echo(ctx, "m"+strconv.Itoa(i)))
		_ = pipe.Process(ctx, cmds[i])
		pipe.Ping(ctx)
	}
	if _, err := pipe.Exec(ctx); err != nil {
		t.Fatal(err)
	}
	for i, c := range cmds {
		if c.Val() != "m"+strconv.Itoa(i) {
			t.Fatalf("reply %d = %q", i, c.Val())
		}
	}

	// 1,000 PINGs in one write, replies in order.
	rc := dialRaw(t, addr)
	rc.send(strings.Repeat("*1\r\n$4\r\nPING\r\n", 1000))
	rc.expect(strings.Repeat("+PONG\r\n", 1000))

	// Mixed replies, including errors, keep their order.
	rc.send("PING\r\nFOO\r\nECHO a\r\nECHO\r\nx-test-panic\r\nECHO b\r\nx-test-noreply\r\nPING\r\n")
	rc.expect("+PONG\r\n-ERR unknown command 'FOO', with args beginning with: \r\n$1\r\na\r\n" +
		"-ERR wrong number of arguments for 'echo' command\r\n-ERR internal error\r\n$1\r\nb\r\n-ERR internal error\r\n+PONG\r\n")
}

func TestServerProtocolErrors(t *testing.T) {
	srv, addr := respTestServer(t, Config{})
	ctx := context.Background()
	other := respTestClient(t, &redis.Options{Addr: addr})
	if err := other.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ in, want string }{
		{"*1\r\n$4\r\nPING\r\n*2\r\n$3\r\nGET\r\n$x\r\n", "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"},
		{"*a\r\n", "-ERR Protocol error: invalid multibulk length\r\n"},
		{"*2\r\nx\r\n", "-ERR Protocol error: expected '$', got 'x'\r\n"},
		{"*1\r\n$4\r\nPINGxx\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
		{"*1\r\n$600000000\r\n", "-ERR Protocol error: invalid bulk length\r\n"},
		{"*1\n", "-ERR Protocol error: invalid multibulk length\r\n"},
		{"PING\r\nSET \"a b\r\n", "+PONG\r\n-ERR Protocol error: unbalanced quotes in request\r\n"},
		{"ECHO 'a'b\r\n", "-ERR Protocol error: unbalanced quotes in request\r\n"},
		{strings.Repeat("x", 70000), "-ERR Protocol error: too big inline request\r\n"},
		{"*0\r\n*-1\r\n\r\n\r\nPING\r\n*1\r\n$-1\r\n", "+PONG\r\n-ERR Protocol error: invalid bulk length\r\n"},
	} {
		rc := dialRaw(t, addr)
		rc.send(tc.in)
		rc.expect(tc.want)
		rc.expectEOF()
	}
	if err := other.Ping(ctx).Err(); err != nil {
		t.Fatalf("another connection after protocol errors: %v", err)
	}
	deadline := time.Now().Add(5 * time.Second)
	for srv.stats.protocolErrors.Load() != 10 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond) // counted when the server side closes
	}
	if got := srv.stats.protocolErrors.Load(); got != 10 {
		t.Errorf("protocol_errors = %d", got)
	}
}

func TestServerLimits(t *testing.T) {
	_, addr := respTestServer(t, Config{MaxValueBytes: 1024, MaxRequestBytes: 3000, MaxArgs: 10})
	ctx := context.Background()
	rdb := respTestClient(t, &redis.Options{Addr: addr})
	big := strings.Repeat("v", 1025)
	if err := rdb.Echo(ctx, big).Err(); err == nil || err.Error() != "ERR value is too large (max 1024 bytes)" {
		t.Fatalf("ECHO 1025 bytes: %v", err)
	}
	if got, err := rdb.Echo(ctx, big[:1024]).Result(); err != nil || got != big[:1024] {
		t.Fatalf("ECHO 1024 bytes: %v", err)
	}
	// Refused even before the engine check, and the connection goes on.
	if err := rdb.Do(ctx, "x-test-data", big).Err(); err == nil || err.Error() != "ERR value is too large (max 1024 bytes)" {
		t.Fatalf("data command with a large value: %v", err)
	}
	args := []any{"ping"}
	for range 10 {
		args = append(args, "a")
	}
	if err := rdb.Do(ctx, args...).Err(); err == nil || err.Error() != "ERR too many arguments (max 10)" {
		t.Fatalf("11 arguments: %v", err)
	}
	if err := rdb.Do(ctx, "echo", strings.Repeat("a", 1000), strings.Repeat("b", 1000), strings.Repeat("c", 1000), "d").Err(); err == nil ||
		err.Error() != "ERR request is too large (max 3000 bytes)" {
		t.Fatalf("3004 bytes: %v", err)
	}
	if err := rdb.Ping(ctx).Err(); err != nil {
		t.Fatal(err)
	}

	// Byte-exact, pipelined with other commands; the oversized payload is
	// discarded as it streams in.
	rc := dialRaw(t, addr)
	rc.send("PING\r\n*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$2000\r\n" + strings.Repeat("z", 2000) + "\r\nECHO " + strings.Repeat("q", 1100) + "\r\nPING\r\n")
	rc.expect("+PONG\r\n-ERR value is too large (max 1024 bytes)\r\n-ERR value is too large (max 1024 bytes)\r\n+PONG\r\n")
}

func TestServerQuit(t *testing.T) {
	_, addr := respTestServer(t, Config{})
	rc := dialRaw(t, addr)
	rc.send("PING\r\nQUIT\r\nPING\r\n")
	rc.expect("+PONG\r\n+OK\r\n")
	rc.expectEOF()
}

func TestServerClientCommands(t *testing.T) {
	srv, addr := respTestServer(t, Config{})
	ctx := context.Background()
	rdb := respTestClient(t, &redis.Options{Addr: addr, PoolSize: 1})
	id, err := rdb.ClientID(ctx).Result()
	if err != nil || id <= 0 {
		t.Fatalf("CLIENT ID = %d, %v", id, err)
	}
	if err := rdb.Do(ctx, "CLIENT", "SETNAME", "worker-7").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Do(ctx, "CLIENT", "SETINFO", "lib-name", "mylib").Err(); err != nil {
		t.Fatal(err)
	}
	info, err := rdb.Do(ctx, "CLIENT", "INFO").Text()
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("id=%d addr=", id)
	if !strings.HasPrefix(info, want) || !strings.HasSuffix(info, "\n") || !strings.Contains(info, " name=worker-7 ") ||
		!strings.Contains(info, " db=0 ") || !strings.Contains(info, " cmd=client|info ") || !strings.Contains(info, " lib-name=mylib ") ||
		!strings.Contains(info, " laddr="+addr+" ") || !strings.Contains(info, " resp=2 ") {
		t.Fatalf("CLIENT INFO = %q", info)
	}
	rc := dialRaw(t, addr)
	rc.roundTrip("CLIENT SETNAME raw\r\n")
	list, err := rdb.ClientList(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if lines := strings.Split(strings.TrimSuffix(list, "\n"), "\n"); len(lines) != 2 ||
		!strings.Contains(lines[0], "name=worker-7") || !strings.Contains(lines[1], "name=raw") {
		t.Fatalf("CLIENT LIST = %q", list)
	}
	only, err := rdb.Do(ctx, "CLIENT", "LIST", "ID", strconv.FormatInt(id, 10)).Text()
	if err != nil || strings.Count(only, "\n") != 1 || !strings.Contains(only, "name=worker-7") {
		t.Fatalf("CLIENT LIST ID = %q, %v", only, err)
	}
	if err := rdb.Do(ctx, "CLIENT", "SETNAME", "").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ClientGetName(ctx).Err(); !errors.Is(err, redis.Nil) {
		t.Fatalf("CLIENT GETNAME after clearing = %v", err)
	}
	help, err := rdb.Do(ctx, "CLIENT", "HELP").StringSlice()
	if err != nil || len(help) < 3 || !strings.HasPrefix(help[0], "CLIENT <subcommand>") {
		t.Fatalf("CLIENT HELP = %q, %v", help, err)
	}
	_ = srv
}

func TestServerCommandCommand(t *testing.T) {
	_, addr := respTestServer(t, Config{})
	ctx := context.Background()
	rdb := respTestClient(t, &redis.Options{Addr: addr})
	n, err := rdb.Do(ctx, "COMMAND", "COUNT").Int()
	if err != nil || n != len(supportedCommands()) {
		t.Fatalf("COMMAND COUNT = %d, %v; table has %d", n, err, len(supportedCommands()))
	}
	infos, err := rdb.Command(ctx).Result() // go-redis parses Redis 7's 10-field entries
	if err != nil {
		t.Fatal(err)
	}
	if len(infos) != n {
		t.Fatalf("COMMAND has %d entries, COUNT %d", len(infos), n)
	}
	ping := infos["ping"]
	if ping == nil || ping.Arity != -1 || ping.FirstKeyPos != 0 || fmt.Sprint(ping.Flags) != "[fast]" {
		t.Fatalf("COMMAND ping = %+v", ping)
	}
	data := infos["x-test-data"]
	if data == nil || !data.ReadOnly || data.FirstKeyPos != 1 || data.LastKeyPos != 1 || data.StepCount != 1 ||
		fmt.Sprint(data.ACLFlags) != "[@read @string @slow]" {
		t.Fatalf("COMMAND x-test-data = %+v", data)
	}
	if infos["flushall"] != nil {
		t.Fatal("COMMAND lists a refused command")
	}
	one, err := rdb.Do(ctx, "COMMAND", "INFO", "PING", "nope", "client|setname").Slice()
	if err != nil || len(one) != 3 || one[1] != nil {
		t.Fatalf("COMMAND INFO = %v, %v", one, err)
	}
	if sub, ok := one[2].([]any); !ok || sub[0] != "client|setname" || sub[1] != int64(3) {
		t.Fatalf("COMMAND INFO client|setname = %v", one[2])
	}
	docs, err := rdb.Do(ctx, "COMMAND", "DOCS", "ping", "client").Slice()
	if err != nil || len(docs) != 4 || docs[0] != "ping" {
		t.Fatalf("COMMAND DOCS = %v, %v", docs, err)
	}
	if d := fmt.Sprint(docs[1]); d != "[summary Returns the server's liveliness response since 1.0.0 group connection complexity ]" {
		t.Fatalf("COMMAND DOCS ping = %s", d)
	}
	all, err := rdb.Do(ctx, "COMMAND", "DOCS").Slice()
	if err != nil || len(all) != 2*n {
		t.Fatalf("COMMAND DOCS = %d entries, %v", len(all)/2, err)
	}
	list, err := rdb.Do(ctx, "COMMAND", "LIST").StringSlice()
	if err != nil || !contains(list, "ping") || !contains(list, "client|setname") || contains(list, "flushall") {
		t.Fatalf("COMMAND LIST = %v, %v", list, err)
	}
	pat, err := rdb.Do(ctx, "COMMAND", "LIST", "FILTERBY", "PATTERN", "cl*").StringSlice()
	if err != nil || !contains(pat, "client") || contains(pat, "ping") {
		t.Fatalf("COMMAND LIST FILTERBY PATTERN = %v, %v", pat, err)
	}
	cat, err := rdb.Do(ctx, "COMMAND", "LIST", "FILTERBY", "ACLCAT", "connection").StringSlice()
	if err != nil || !contains(cat, "ping") || !contains(cat, "hello") || contains(cat, "info") {
		t.Fatalf("COMMAND LIST FILTERBY ACLCAT = %v, %v", cat, err)
	}
}

func contains(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

func TestServerInfo(t *testing.T) {
	_, addr := respTestServer(t, Config{})
	ctx := context.Background()
	rdb := respTestClient(t, &redis.Options{Addr: addr})
	for range 3 {
		rdb.Ping(ctx)
	}
	all, err := rdb.Info(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"# Server\r\nredis_version:" + RedisVersion + "\r\n", "\r\n\r\n# Clients\r\nconnected_clients:1\r\n",
		"# Stats\r\n", "\r\ntotal_commands_processed:", "# Replication\r\nrole:master\r\n", "globalreplica_version:" + Version, "# Keyspace\r\n"} {
		if !strings.Contains(all, want) {
			t.Errorf("INFO lacks %q:\n%s", want, all)
		}
	}
	if strings.HasSuffix(all, "\r\n\r\n") {
		t.Errorf("INFO ends with an empty line: %q", all[len(all)-20:])
	}
	port := addr[strings.LastIndexByte(addr, ':')+1:]
	server, err := rdb.Info(ctx, "SERVER").Result()
	if err != nil || !strings.HasPrefix(server, "# Server\r\n") || strings.Contains(server, "# Clients") || !strings.Contains(server, "tcp_port:"+port+"\r\n") {
		t.Fatalf("INFO server = %q, %v", server, err)
	}
	two, err := rdb.Info(ctx, "replication", "clients").Result()
	if err != nil || !strings.HasPrefix(two, "# Clients\r\n") || !strings.Contains(two, "\r\n\r\n# Replication\r\nrole:master") {
		t.Fatalf("INFO replication clients = %q, %v", two, err)
	}
	if none, err := rdb.Info(ctx, "nosuch").Result(); err != nil || none != "" {
		t.Fatalf("INFO nosuch = %q, %v", none, err)
	}
	m, err := rdb.InfoMap(ctx, "stats").Result()
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := strconv.Atoi(m["Stats"]["total_commands_processed"]); n < 4 {
		t.Fatalf("total_commands_processed = %d", n)
	}
}

func TestServerInlineCommands(t *testing.T) {
	_, addr := respTestServer(t, Config{})
	rc := dialRaw(t, addr)
	rc.send("PING\nECHO \"a b\"\r\nECHO 'it\\'s'\r\n   \r\nECHO a\"b c\"\r\n")
	rc.expect("+PONG\r\n$3\r\na b\r\n$4\r\nit's\r\n$4\r\nab c\r\n")
}

func TestServerMaxClients(t *testing.T) {
	_, addr := respTestServer(t, Config{MaxClients: 2})
	a, b := dialRaw(t, addr), dialRaw(t, addr)
	a.roundTrip("PING\r\n")
	b.roundTrip("PING\r\n")
	c := dialRaw(t, addr)
	c.expect("-ERR max number of clients reached\r\n")
	c.expectEOF()
	a.send("QUIT\r\n")
	a.expect("+OK\r\n")
	a.expectEOF()
	deadline := time.Now().Add(5 * time.Second)
	for {
		d := dialRaw(t, addr)
		d.send("PING\r\n")
		_ = d.c.SetReadDeadline(time.Now().Add(5 * time.Second))
		line, _ := d.r.ReadString('\n')
		if line == "+PONG\r\n" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no room after a client left: %q", line)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestServerGracefulShutdown(t *testing.T) {
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.InfoLevel)
	srv, err := NewServer(Config{Addr: "127.0.0.1:0"}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	addr := srv.Addr().String()

	idle := dialRaw(t, addr)
	idle.roundTrip("PING\r\n")
	busy := dialRaw(t, addr)
	busy.send("x-test-sleep 300\r\n")
	time.Sleep(50 * time.Millisecond) // let the command start
	start := time.Now()
	cancel()
	busy.expect("+OK\r\n") // the running command finishes and is answered
	busy.expectEOF()
	idle.expectEOF()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("shutdown took %v", d)
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Fatal("still accepting after shutdown")
	}
	if err := srv.Close(context.Background()); err != nil {
		t.Fatalf("second Close = %v", err)
	}
}

func TestServerForcedShutdown(t *testing.T) {
	log := zerolog.New(zerolog.NewTestWriter(t)).Level(zerolog.ErrorLevel)
	srv, err := NewServer(Config{Addr: "127.0.0.1:0"}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Run(context.Background()) }()
	busy := dialRaw(t, srv.Addr().String())
	busy.send("x-test-sleep 60000\r\n")
	time.Sleep(50 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if err := srv.Close(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Close = %v, want a deadline error", err)
	}
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Run = %v", err)
	}
	busy.expectEOF()
}

func TestServerConfig(t *testing.T) {
	log := zerolog.Nop()
	for _, cfg := range []Config{
		{MaxValueBytes: -1},
		{MaxValueBytes: 100, MaxRequestBytes: 50},
		{MaxClients: -3},
	} {
		if _, err := NewServer(cfg, nil, log); !errors.Is(err, ErrConfig) {
			t.Errorf("NewServer(%+v) = %v", cfg, err)
		}
	}
	srv, err := NewServer(Config{}, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if c := srv.cfg; c.Addr != DefaultAddr || c.MaxValueBytes != DefaultMaxValueBytes || c.MaxRequestBytes != DefaultMaxRequestBytes ||
		c.MaxArgs != DefaultMaxArgs || c.MaxClients != DefaultMaxClients || c.ShutdownTimeout != DefaultShutdownTimeout {
		t.Fatalf("defaults = %+v", c)
	}
	if err := srv.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := srv.Run(context.Background()); !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Run after Close = %v", err)
	}
}

func TestCommandTable(t *testing.T) {
	for name, c := range commandTable {
		if name != c.Name {
			t.Errorf("%s registered as %q", c.Name, name)
		}
		if c.Refused != "" {
			if c.Handler != nil || strings.HasSuffix(c.Refused, ".") {
				t.Errorf("%s: refused entry with a handler or a trailing period", name)
			}
			continue
		}
		if c.Summary == "" {
			t.Errorf("%s: no summary", name)
		}
	}
	var help bytes.Buffer
	if err := WriteCommandHelp(&help); err != nil {
		t.Fatal(err)
	}
	for _, c := range Commands() {
		want := c.Summary
		if c.Refused != "" {
			want = strings.ToUpper(c.Name) + " " // name column
		}
		if !strings.Contains(help.String(), want) {
			t.Errorf("help lacks %q", want)
		}
	}
	if !strings.Contains(help.String(), reasonFlush) || !strings.Contains(help.String(), "CLIENT SETNAME (3)") {
		t.Errorf("help:\n%s", help.String())
	}

	for _, bad := range []Command{
		{Name: "Get", Arity: 2, Group: GroupString, Handler: cmdPing},
		{Name: "x", Arity: 0, Group: GroupString, Handler: cmdPing},
		{Name: "x", Arity: 1, Group: "nope", Handler: cmdPing},
		{Name: "x", Arity: 1, Group: GroupString},
		{Name: "x", Arity: 1, Group: GroupString, Handler: cmdPing, Flags: []string{"writ"}},
		{Name: "x", Arity: 1, Group: GroupString, Handler: cmdPing, FirstKey: 1},
		{Name: "x", Group: GroupString, Refused: "r", Handler: cmdPing},
		{Name: "x", Arity: -2, Group: GroupServer, Subcommands: []Command{{Name: "y", Arity: 1, Handler: cmdPing}}},
	} {
		if err := prepareCommand(&bad, ""); err == nil {
			t.Errorf("prepareCommand(%+v) accepted", bad)
		}
	}
}

func TestParseNumbers(t *testing.T) {
	for in, want := range map[string]int64{
		"0": 0, "1": 1, "-1": -1, "9223372036854775807": 1<<63 - 1, "-9223372036854775808": -1 << 63, "123456": 123456,
	} {
		if got, err := ParseInt([]byte(in)); err != nil || got != want {
			t.Errorf("ParseInt(%q) = %d, %v", in, got, err)
		}
	}
	for _, in := range []string{"", "-", "+1", "01", "-0", " 1", "1 ", "1.0", "9223372036854775808", "-9223372036854775809", "99999999999999999999", "1e3", "0x10"} {
		if _, err := ParseInt([]byte(in)); !errors.Is(err, ErrNotInteger) || err.Error() != "ERR value is not an integer or out of range" {
			t.Errorf("ParseInt(%q) = %v", in, err)
		}
	}
	for in, want := range map[string]float64{"1": 1, "-1.5": -1.5, ".5": 0.5, "1e3": 1000, "+2": 2, "inf": math.Inf(1), "-inf": math.Inf(-1), "+inf": math.Inf(1), "5.": 5} {
		if got, err := ParseFloat([]byte(in)); err != nil || got != want {
			t.Errorf("ParseFloat(%q) = %v, %v", in, got, err)
		}
	}
	for _, in := range []string{"", " 1", "nan", "1e400", "abc", "1_000", "1.0x"} {
		if _, err := ParseFloat([]byte(in)); !errors.Is(err, ErrNotFloat) || err.Error() != "ERR value is not a valid float" {
			t.Errorf("ParseFloat(%q) = %v", in, err)
		}
	}
	if ErrSyntax.Error() != "ERR syntax error" {
		t.Error(ErrSyntax)
	}
}

func TestErrorReply(t *testing.T) {
	for _, tc := range []struct {
		err     error
		want    string
		backend bool
	}{
		{ErrSyntax, "ERR syntax error", false},
		{fmt.Errorf("wrapped: %w", ErrSyntax), "ERR backend unavailable: wrapped: ERR syntax error", true},
		{errors.New("WRONGTYPE Operation against a key holding the wrong kind of value"), "WRONGTYPE Operation against a key holding the wrong kind of value", false},
		{redis.Nil, "ERR backend unavailable: redis: nil", true},
		{fmt.Errorf("child: eval: %w", proto("OOM command not allowed when used memory > 'maxmemory'.")), "OOM command not allowed when used memory > 'maxmemory'.", false},
		{proto("NOAUTH Authentication required."), "ERR backend unavailable: the backing Redis rejected the child's credentials: NOAUTH Authentication required.", true},
		{io.EOF, "ERR backend unavailable: EOF", true},
		{context.DeadlineExceeded, "ERR backend unavailable: context deadline exceeded", true},
		{&net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, "ERR backend unavailable: dial tcp: connection refused", true},
	} {
		got, backend := errorReply(tc.err)
		if got != tc.want || backend != tc.backend {
			t.Errorf("errorReply(%v) = %q, %v; want %q, %v", tc.err, got, backend, tc.want, tc.backend)
		}
	}
}

// proto is a Redis error reply as go-redis returns it (it implements
// redis.Error, like go-redis's proto.RedisError).
type proto string

func (e proto) Error() string { return string(e) }
func (proto) RedisError()     {}

var _ redis.Error = proto("")

// TestRedisCLI drives the endpoint with redis-cli for a scripted session.
func TestRedisCLI(t *testing.T) {
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatal(`redis-cli not found: run "go tool task deps" (Debian package redis-tools)`)
	}
	_, addr := respTestServer(t, Config{Password: "pw"})
	host, port, _ := net.SplitHostPort(addr)
	run := func(stdin string, args ...string) string {
		t.Helper()
		cmd := exec.Command(cli, append([]string{"-h", host, "-p", port}, args...)...)
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("redis-cli %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	if got := run("", "PING"); got != "NOAUTH Authentication required.\n\n" && got != "(error) NOAUTH Authentication required.\n" {
		t.Errorf("PING without AUTH: %q", got)
	}
	session := "PING\nECHO \"hello world\"\nCLIENT SETNAME cli\nCLIENT GETNAME\nSELECT 0\nSELECT 3\nFLUSHALL\nNOSUCH a b\nCOMMAND COUNT\nINFO replication\nQUIT\n"
	got := run(session, "-a", "pw", "--no-auth-warning")
	want := "PONG\nhello world\nOK\ncli\nOK\n" +
		"ERR SELECT is not supported in active-active mode: a global instance has one database (0)\n\n" +
		"ERR FLUSHALL is not supported in active-active mode: " + reasonFlush + "\n\n" +
		"ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' \n\n" +
		strconv.Itoa(len(supportedCommands())) + "\n" +
		"# Replication\r\nrole:master\r\nconnected_slaves:0\r\n"
	if got != want {
		t.Errorf("session:\n%q\nwant\n%q", got, want)
	}
	// COMMAND DOCS is what an interactive redis-cli 7 asks for at startup.
	if got := run("", "-a", "pw", "--no-auth-warning", "COMMAND", "DOCS", "echo"); !strings.Contains(got, "Returns the given string") {
		t.Errorf("COMMAND DOCS echo: %q", got)
	}
	if got := run("", "-a", "pw", "--no-auth-warning", "--raw", "CLIENT", "LIST"); !strings.HasPrefix(got, "id=") {
		t.Errorf("CLIENT LIST: %q", got)
	}
}

// TestRedisCLIInteractive starts redis-cli in interactive mode on a pseudo
// terminal (script(1)), where it loads COMMAND DOCS for its hints.
func TestRedisCLIInteractive(t *testing.T) {
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatal(`redis-cli not found: run "go tool task deps" (Debian package redis-tools)`)
	}
	scriptPath, err := exec.LookPath("script")
	if err != nil {
		t.Fatal("script(1) not found (Debian package bsdutils)")
	}
	_, addr := respTestServer(t, Config{})
	host, port, _ := net.SplitHostPort(addr)
	cmd := exec.Command(scriptPath, "-qec", cli+" -h "+host+" -p "+port, "/dev/null")
	cmd.Env = append(cmd.Environ(), "TERM=dumb", "HOME="+t.TempDir())
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	var out testredis.SyncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"PING", "ECHO works", "HELP ECHO", "QUIT"} {
		_, _ = io.WriteString(stdin, line+"\n")
		time.Sleep(200 * time.Millisecond)
	}
	_ = stdin.Close()
	errc := make(chan error, 1)
	go func() { errc <- cmd.Wait() }()
	select {
	case err := <-errc:
		if err != nil {
			t.Logf("redis-cli: %v", err)
		}
	case <-time.After(10 * time.Second):
		_ = cmd.Process.Kill()
		t.Logf("redis-cli killed: %v", <-errc)
		t.Fatalf("redis-cli did not exit:\n%s", out.String())
	}
	s := out.String()
	for _, want := range []string{"PONG", "works", "Returns the given string"} {
		if !strings.Contains(s, want) {
			t.Errorf("interactive redis-cli output lacks %q:\n%s", want, s)
		}
	}
}

// BenchmarkServerPing measures the endpoint alone (framer, redcon,
// dispatch, reply) with pipelines of 16 PINGs over one connection.
func BenchmarkServerPing(b *testing.B) {
	_, addr := respTestServer(b, Config{})
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = c.Close() }()
	const depth = 16
	req := []byte(strings.Repeat("*1\r\n$4\r\nPING\r\n", depth))
	want := len("+PONG\r\n") * depth
	buf := make([]byte, want)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i += depth {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
	}
}

func TestServerDeferredReplies(t *testing.T) {
	_, addr := respTestServer(t, Config{})
	rc := dialRaw(t, addr)

	// 16 pipelined deferred commands overlap: about 100ms, not 1.6s.
	start := time.Now()
	var req, want strings.Builder
	for i := range 16 {
		fmt.Fprintf(&req, "x-test-later 100 v%02d\r\n", i)
		fmt.Fprintf(&want, "$3\r\nv%02d\r\n", i)
	}
	rc.send(req.String())
	rc.expect(want.String())
	if d := time.Since(start); d > 800*time.Millisecond {
		t.Errorf("16 deferred commands took %v: not overlapped", d)
	}

	// Mixed with commands that reply at once, and with errors: request order.
	rc.send("x-test-later 50 a\r\nPING\r\nx-test-later 20 b\r\nx-test-later 1 c\r\nFOO\r\n" +
		"x-test-later 30 d\r\nx-test-later 1 panic\r\nx-test-later x y\r\nx-test-later 1 e\r\nECHO f\r\n")
	rc.expect("$1\r\na\r\n+PONG\r\n$1\r\nb\r\n$1\r\nc\r\n-ERR unknown command 'FOO', with args beginning with: \r\n" +
		"$1\r\nd\r\n-ERR internal error\r\n-ERR value is not an integer or out of range\r\n$1\r\ne\r\n$1\r\nf\r\n")

	// One at a time (no pipeline) it works the same.
	rdb := respTestClient(t, &redis.Options{Addr: addr})
	if got, err := rdb.Do(context.Background(), "x-test-later", "1", "solo").Text(); err != nil || got != "solo" {
		t.Fatalf("x-test-later = %q, %v", got, err)
	}
	// QUIT after deferred replies: they are written first.
	rc.send("x-test-later 30 last\r\nQUIT\r\nPING\r\n")
	rc.expect("$4\r\nlast\r\n+OK\r\n")
	rc.expectEOF()
}

// fakeInfo stands in for the engine's optional INFO sections.
type fakeInfo struct{ err error }

func (f fakeInfo) InfoSections(context.Context) ([]InfoSection, error) {
	if f.err != nil {
		return nil, f.err
	}
	return []InfoSection{
		{Name: "ActiveActive", Fields: []InfoField{{"region", "fra"}, {"op_log_length", "3"}}},
		{Name: "Keyspace", Fields: []InfoField{{"db0", "keys=2,expires=1,avg_ttl=0"}}},
		{Name: "Server", Fields: []InfoField{{"ignored", "1"}}},
	}, nil
}

var _ infoProvider = fakeInfo{}

func TestServerInfoFromEngine(t *testing.T) {
	srv, addr := respTestServer(t, Config{})
	srv.info = fakeInfo{}
	ctx := context.Background()
	rdb := respTestClient(t, &redis.Options{Addr: addr})
	all, err := rdb.Info(ctx).Result()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(all, "\r\n\r\n# ActiveActive\r\nregion:fra\r\nop_log_length:3\r\n\r\n# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=0\r\n") ||
		strings.Contains(all, "ignored") || !strings.HasSuffix(all, "avg_ttl=0\r\n") {
		t.Fatalf("INFO = %q", all)
	}
	if ks, err := rdb.Info(ctx, "keyspace").Result(); err != nil || ks != "# Keyspace\r\ndb0:keys=2,expires=1,avg_ttl=0\r\n" {
		t.Fatalf("INFO keyspace = %q, %v", ks, err)
	}
	if aa, err := rdb.Info(ctx, "activeactive").Result(); err != nil || !strings.HasPrefix(aa, "# ActiveActive\r\n") {
		t.Fatalf("INFO activeactive = %q, %v", aa, err)
	}
	srv.info = fakeInfo{err: errors.New("dial tcp 127.0.0.1:6379: connect: connection refused")}
	if err := rdb.Info(ctx).Err(); err == nil || err.Error() != "ERR backend unavailable: dial tcp 127.0.0.1:6379: connect: connection refused" {
		t.Fatalf("INFO with the backend down: %v", err)
	}
	if err := rdb.Info(ctx, "server").Err(); err != nil { // own sections only: no backend needed
		t.Fatalf("INFO server with the backend down: %v", err)
	}
}

// TestRefusedCommandsDocumented keeps docs/semantics.md's table of refused
// commands and the command table in step: same commands, same reasons.
func TestRefusedCommandsDocumented(t *testing.T) {
	data, err := os.ReadFile("../docs/semantics.md")
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(data), "## Commands refused in active-active mode")
	if !ok {
		t.Fatal("docs/semantics.md has no section on refused commands")
	}
	if i := strings.Index(section, "\n## "); i >= 0 {
		section = section[:i]
	}
	documented := map[string]string{}
	nameRE := regexp.MustCompile("`([A-Z_]+)`")
	for _, line := range strings.Split(section, "\n") {
		cells := strings.Split(line, "|")
		if len(cells) != 4 || strings.HasPrefix(strings.TrimSpace(cells[1]), "---") || strings.TrimSpace(cells[1]) == "commands" {
			continue
		}
		reason := strings.TrimSpace(cells[2])
		for _, m := range nameRE.FindAllStringSubmatch(cells[1], -1) {
			documented[strings.ToLower(m[1])] = reason
		}
	}
	if reason := documented["select"]; reason != "a global instance has one database (0)" {
		t.Errorf("docs: SELECT reason %q", reason)
	}
	delete(documented, "select") // SELECT 0 works; SELECT n answers the same reason
	for _, c := range Commands() {
		if c.Refused == "" {
			continue
		}
		switch reason, ok := documented[c.Name]; {
		case !ok:
			t.Errorf("%s is refused but not in docs/semantics.md", strings.ToUpper(c.Name))
		case reason != c.Refused:
			t.Errorf("%s: docs say %q, the error says %q", strings.ToUpper(c.Name), reason, c.Refused)
		}
		delete(documented, c.Name)
	}
	for name := range documented {
		t.Errorf("docs/semantics.md lists %s as refused, the command table does not", strings.ToUpper(name))
	}
}
