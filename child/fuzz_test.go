package child

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"
	"github.com/tidwall/redcon"
)

// fuzzSeeds are request streams for both fuzz targets: valid, pipelined,
// inline, oversized and malformed.
var fuzzSeeds = []string{
	"*1\r\n$4\r\nPING\r\n",
	"PING\r\nECHO \"a\\x41 b\" 'c\\'d'\r\n",
	"*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n*1\r\n$4\r\nPING\r\n",
	"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$40\r\n0123456789012345678901234567890123456789\r\nPING\r\n",
	"*9\r\n$4\r\nPING\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n$1\r\na\r\n",
	"*0\r\n*-1\r\n\r\n\r\n",
	"*2\r\n$3\r\nGET\r\n$x\r\n",
	"*1\r\n$4\r\nPINGxx\r\n",
	"SET \"a b\r\n",
	"HELLO 3\r\nHELLO 2 AUTH default pw SETNAME x\r\nCLIENT LIST\r\nCLIENT INFO\r\n",
	"COMMAND\r\nCOMMAND DOCS\r\nCOMMAND INFO get client|setname\r\nCOMMAND GETKEYS x-test-data k\r\nINFO\r\n",
	"x-test-panic\r\nx-test-noreply\r\nx-test-data k\r\nFLUSHALL\r\nQUIT\r\nPING\r\n",
	"x-test-later 1 a\r\nPING\r\nx-test-later 2 b\r\nx-test-later 1 panic\r\nECHO c\r\n",
	"*1\r\n$2147483648\r\n",
	"*99999999999\r\n",
}

// fuzzLimits keep the limits small so that fuzzing reaches them.
const (
	fuzzMaxArgs    = 8
	fuzzMaxValue   = 32
	fuzzMaxRequest = 64
)

// FuzzFramer checks the request framer on its own: no panic, output that
// redcon parses into exactly the requests counted, refusals in order, and
// the same result however the input is split into reads.
func FuzzFramer(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s), uint8(3))
	}
	f.Fuzz(func(t *testing.T, in []byte, chunk uint8) {
		whole := newFramer(fuzzMaxArgs, fuzzMaxValue, fuzzMaxRequest)
		out1, err1 := whole.feed(in, nil)

		split := newFramer(fuzzMaxArgs, fuzzMaxValue, fuzzMaxRequest)
		var out2 []byte
		var err2 error
		step := int(chunk%16) + 1
		for i := 0; i < len(in) && err2 == nil; i += step {
			out2, err2 = split.feed(in[i:min(i+step, len(in))], out2)
		}
		if !bytes.Equal(out1, out2) || (err1 == nil) != (err2 == nil) || err1 != nil && err1.Error() != err2.Error() {
			t.Fatalf("split reads differ: %q %v vs %q %v", out1, err1, out2, err2)
		}
		if whole.seq != split.seq || len(whole.refusals) != len(split.refusals) {
			t.Fatalf("split reads count differently: %d/%d requests, %d/%d refusals", whole.seq, split.seq, len(whole.refusals), len(split.refusals))
		}
		var perr *protocolError
		if err1 != nil && !errors.As(err1, &perr) {
			t.Fatalf("error %v is not a protocol error", err1)
		}

		// redcon parses the output into exactly the counted requests, each
		// within the limits.
		rd := redcon.NewReader(bytes.NewReader(out1))
		var n uint64
		for {
			cmd, err := rd.ReadCommand()
			if err != nil {
				if !errors.Is(err, io.EOF) {
					if whole.st != stStart || err1 != nil {
						break // a request cut short by the end of the input or an error
					}
					t.Fatalf("redcon: %v on %q", err, out1)
				}
				break
			}
			n++
			if len(cmd.Args) == 0 || len(cmd.Args) > fuzzMaxArgs {
				t.Fatalf("request with %d arguments", len(cmd.Args))
			}
			total := 0
			for _, a := range cmd.Args {
				if len(a) > fuzzMaxValue {
					t.Fatalf("argument of %d bytes passed", len(a))
				}
				total += len(a)
			}
			if total > fuzzMaxRequest {
				t.Fatalf("request of %d bytes passed", total)
			}
		}
		counted := whole.seq
		if whole.mode == modeSubst && whole.argsLeft == 1 && (whole.st == stBulkData || whole.st == stBulkCRLF) {
			counted++ // the refused request's last empty bulk is out; its payload is still being discarded
		}
		if n != counted {
			t.Fatalf("redcon parsed %d requests, the framer counted %d: %q", n, whole.seq, out1)
		}
		last := uint64(0)
		for _, r := range whole.refusals {
			if r.seq <= last || r.seq > whole.seq+1 {
				t.Fatalf("refusals out of order: %+v", whole.refusals)
			}
			last = r.seq
		}
	})
}

// FuzzDispatch feeds random bytes to a live server connection: the server
// must not panic, must answer or close, and must keep serving another
// connection afterwards.
func FuzzDispatch(f *testing.F) {
	for _, s := range fuzzSeeds {
		f.Add([]byte(s))
	}
	srv, err := NewServer(Config{Addr: "127.0.0.1:0", Password: "", MaxArgs: fuzzMaxArgs, MaxValueBytes: fuzzMaxValue,
		MaxRequestBytes: fuzzMaxRequest, ShutdownTimeout: time.Second}, nil, zerolog.Nop())
	if err != nil {
		f.Fatal(err)
	}
	if err := srv.Listen(); err != nil {
		f.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	f.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			f.Errorf("Run: %v", err)
		}
	})
	addr := srv.Addr().String()
	other := redis.NewClient(&redis.Options{Addr: addr, PoolSize: 1})
	f.Cleanup(func() { _ = other.Close() })

	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = c.Close() }()
		_ = c.SetDeadline(time.Now().Add(3 * time.Second))
		go func() {
			_, _ = c.Write(in)
			_ = c.(*net.TCPConn).CloseWrite()
		}()
		// Every reply must be well-formed RESP until the server closes.
		r := bufio.NewReader(c)
		for {
			var b bytes.Buffer
			err := readRESP(r, &b)
			if err != nil {
				var ne net.Error
				if errors.As(err, &ne) && ne.Timeout() {
					break // a slow command (x-test-sleep); not a server failure
				}
				if b.Len() > 0 && !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !strings.Contains(err.Error(), "reset") {
					t.Fatalf("malformed reply %q: %v", b.String(), err)
				}
				break
			}
		}
		if err := other.Ping(context.Background()).Err(); err != nil {
			t.Fatalf("another connection: %v", err)
		}
	})
}

func TestFramerLimits(t *testing.T) {
	fr := newFramer(3, 4, 6)
	in := "*2\r\n$4\r\nECHO\r\n$5\r\nhello\r\n" + // value too large
		"*4\r\n$1\r\na\r\n$1\r\nb\r\n$1\r\nc\r\n$1\r\nd\r\n" + // too many args
		"*3\r\n$4\r\nECHO\r\n$3\r\nabc\r\n$1\r\nd\r\n" + // 8 bytes > 6
		"ECHO hello\r\n" + // inline, too large
		"*1\r\n$4\r\nPING\r\n"
	out, err := fr.feed([]byte(in), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := "*2\r\n$4\r\nECHO\r\n$0\r\n\r\n" +
		"*1\r\n$0\r\n\r\n" +
		"*3\r\n$4\r\nECHO\r\n$0\r\n\r\n$0\r\n\r\n" +
		"*1\r\n$0\r\n\r\n" +
		"*1\r\n$4\r\nPING\r\n"
	if string(out) != want {
		t.Fatalf("out = %q\nwant %q", out, want)
	}
	for seq := uint64(1); seq <= 5; seq++ {
		err := fr.takeRefusal(seq)
		want := map[uint64]string{
			1: "ERR value is too large (max 4 bytes)",
			2: "ERR too many arguments (max 3)",
			3: "ERR request is too large (max 6 bytes)",
			4: "ERR value is too large (max 4 bytes)",
		}[seq]
		if (err == nil && want != "") || (err != nil && err.Error() != want) {
			t.Errorf("request %d: refusal %v, want %q", seq, err, want)
		}
	}
}

func TestSplitArgs(t *testing.T) {
	for in, want := range map[string][]string{
		``:                   nil,
		`   `:                nil,
		`a b  c`:             {"a", "b", "c"},
		`"a b" 'c d'`:        {"a b", "c d"},
		`"\x41\x4a\n\t\"\\"`: {"AJ\n\t\"\\"},
		`'it\'s' '\n'`:       {"it's", `\n`},
		`a"b c"d`:            nil, // unbalanced: closing quote not followed by a space
		`a"b c" d`:           {"ab c", "d"},
		`""`:                 {""},
		"a\x00b c":           {"a"},
		"\va\f":              {"a\f"}, // blanks are isspace(), token ends only at " \n\r\t"
		`"abc`:               nil,
		`'abc`:               nil,
		`"\xZZ"`:             {"xZZ"},
	} {
		got, ok := splitArgs([]byte(in))
		var gs []string
		for _, g := range got {
			gs = append(gs, string(g))
		}
		wantOK := want != nil || strings.TrimSpace(in) == "" || in == "\x00"
		if ok != wantOK || strings.Join(gs, "|") != strings.Join(want, "|") || len(gs) != len(want) {
			t.Errorf("splitArgs(%q) = %q, %v; want %q", in, gs, ok, want)
		}
	}
}
