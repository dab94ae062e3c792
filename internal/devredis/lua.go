package devredis

import (
	"bufio"
	"bytes"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"sync"

	luajson "github.com/alicebob/miniredis/v2/gopher-json"
	"github.com/alicebob/miniredis/v2/server"
	lua "github.com/yuin/gopher-lua"
	"github.com/yuin/gopher-lua/parse"
)

// library is one loaded function library with its own Lua state. Its
// globals are read-only; while the library loads they resolve to the load
// API (standard libraries and redis.register_function/log), afterwards to
// the run API (standard libraries, the full redis table, cmsgpack, cjson),
// as in Redis 7.
type library struct {
	s     *Server
	name  string
	code  string
	ls    *lua.LState
	funcs map[string]*function
	order []string // registration order, for FUNCTION LIST

	loading    bool
	gmt        *lua.LTable // metatable of the globals table
	runAPI     *lua.LTable
	errHandler *lua.LFunction

	// the call in progress; calls run one at a time (miniredis's lock is
	// held for each, callMu makes that explicit)
	callMu   sync.Mutex
	cur      *server.Peer // dispatches redis.call in the caller's context
	buf      bytes.Buffer
	w        *bufio.Writer
	noWrites bool
	fname    string
}

type function struct {
	lib      *library
	name     string
	desc     string
	flags    []string
	noWrites bool
	fn       *lua.LFunction
}

// globals of the Lua base library that a function does not get
var hiddenGlobals = map[string]bool{
	"_G": true, "dofile": true, "loadfile": true, "require": true, "module": true,
	"print": true, "_printregs": true, "_GOPHER_LUA_VERSION": true, "newproxy": true,
}

// newLibrary compiles and runs a library's code; it returns the library or
// an error reply.
func newLibrary(s *Server, name, code string) (*library, string) {
	ls := lua.NewState(lua.Options{SkipOpenLibs: true, RegistrySize: 256 * 20, RegistryMaxSize: 1 << 20})
	lib := &library{s: s, name: name, code: code, ls: ls, funcs: map[string]*function{}}
	lib.w = bufio.NewWriter(&lib.buf)
	for _, open := range []struct {
		name string
		fn   lua.LGFunction
	}{{lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		ls.Push(ls.NewFunction(open.fn))
		ls.Push(lua.LString(open.name))
		ls.Call(1, 0)
	}
	std := func() *lua.LTable {
		t := ls.NewTable()
		ls.G.Global.ForEach(func(k, v lua.LValue) {
			if ks, ok := k.(lua.LString); ok && !hiddenGlobals[string(ks)] {
				t.RawSet(k, v)
			}
		})
		return t
	}
	noGlobal := ls.NewFunction(func(ls *lua.LState) int {
		ls.RaiseError("Script attempted to access nonexistent global variable '%s'", ls.CheckAny(2).String())
		return 0
	})
	readOnly := ls.NewFunction(func(ls *lua.LState) int {
		ls.RaiseError("Attempt to modify a readonly table")
		return 0
	})
	protect := func(t *lua.LTable) {
		mt := ls.NewTable()
		mt.RawSetString("__index", noGlobal)
		mt.RawSetString("__newindex", readOnly)
		ls.SetMetatable(t, mt)
	}

	G := ls.NewTable()
	runRedis := ls.NewTable()
	ls.SetFuncs(runRedis, map[string]lua.LGFunction{
		"call":               lib.redisCall(true),
		"pcall":              lib.redisCall(false),
		"error_reply":        luaErrorReply,
		"status_reply":       luaStatusReply,
		"log":                luaLog,
		"sha1hex":            luaSha1hex,
		"setresp":            luaSetresp,
		"set_repl":           func(*lua.LState) int { return 0 },
		"replicate_commands": func(ls *lua.LState) int { ls.Push(lua.LTrue); return 1 },
		"breakpoint":         func(ls *lua.LState) int { ls.Push(lua.LFalse); return 1 },
		"debug":              func(*lua.LState) int { return 0 },
		"acl_check_cmd": func(ls *lua.LState) int {
			ls.Push(lua.LBool(s.srv.IsRegisteredCommand(ls.CheckString(1))))
			return 1
		},
	})
	loadRedis := ls.NewTable()
	ls.SetFuncs(loadRedis, map[string]lua.LGFunction{
		"register_function": lib.registerFunction,
		"log":               luaLog,
		"setresp":           luaSetresp,
	})
	for _, t := range []*lua.LTable{runRedis, loadRedis} {
		for k, v := range map[string]lua.LValue{
			"LOG_DEBUG": lua.LNumber(0), "LOG_VERBOSE": lua.LNumber(1), "LOG_NOTICE": lua.LNumber(2), "LOG_WARNING": lua.LNumber(3),
			"REPL_NONE": lua.LNumber(0), "REPL_AOF": lua.LNumber(1), "REPL_SLAVE": lua.LNumber(2), "REPL_REPLICA": lua.LNumber(2), "REPL_ALL": lua.LNumber(3),
			"REDIS_VERSION": lua.LString("7.0.0"), "REDIS_VERSION_NUM": lua.LNumber(0x070000),
		} {
			t.RawSetString(k, v)
		}
		protect(t)
	}
	ls.Push(ls.NewFunction(luajson.Loader))
	ls.Call(0, 1)
	cjson := ls.Get(-1)
	ls.Pop(1)

	// where gopher-lua differs from Redis's Lua 5.1 in ways the engine sees:
	// its tonumber reads "1e15" or a 20-digit integer as nil (Lua: strtod),
	// its math.huge is the largest double (Lua: infinity), its tostring
	// formats numbers with Go's shortest form (Lua: "%.14g"), its
	// string.format is Go's fmt (Lua: C's printf)
	ls.G.Global.RawSetString("tonumber", ls.NewFunction(luaToNumber))
	ls.G.Global.RawSetString("tostring", ls.NewFunction(luaToString))
	if m, ok := ls.G.Global.RawGetString("math").(*lua.LTable); ok {
		m.RawSetString("huge", lua.LNumber(math.Inf(1)))
	}
	if m, ok := ls.G.Global.RawGetString("string").(*lua.LTable); ok {
		m.RawSetString("format", ls.NewFunction(luaFormat))
	}
	lib.runAPI = std()
	lib.runAPI.RawSetString("redis", runRedis)
	lib.runAPI.RawSetString("cmsgpack", openCmsgpack(ls))
	lib.runAPI.RawSetString("cjson", cjson)
	lib.runAPI.RawSetString("_G", G)
	protect(lib.runAPI)
	loadAPI := std()
	loadAPI.RawSetString("redis", loadRedis)
	loadAPI.RawSetString("_G", G)
	protect(loadAPI)
	lib.gmt = ls.NewTable()
	lib.gmt.RawSetString("__index", loadAPI)
	lib.gmt.RawSetString("__newindex", readOnly)
	ls.SetMetatable(G, lib.gmt)
	lib.errHandler = ls.NewFunction(errorHandler)

	// the metadata line becomes an empty line, so that line numbers in
	// errors match the code as given
	body := ""
	if i := strings.IndexByte(code, '\n'); i >= 0 {
		body = code[i:]
	}
	chunk, err := parse.Parse(strings.NewReader(body), "user_function")
	if err != nil {
		ls.Close()
		return nil, "ERR Error compiling function: " + oneLine(err.Error())
	}
	proto, err := lua.Compile(chunk, "user_function")
	if err != nil {
		ls.Close()
		return nil, "ERR Error compiling function: " + oneLine(err.Error())
	}
	fn := ls.NewFunctionFromProto(proto)
	fn.Env = G
	lib.loading = true
	ls.Push(fn)
	err = ls.PCall(0, 0, nil)
	lib.loading = false
	if err != nil {
		ls.Close()
		return nil, "ERR Error registering functions: " + luaErrorText(err)
	}
	if len(lib.funcs) == 0 {
		ls.Close()
		return nil, "ERR No functions registered"
	}
	lib.gmt.RawSetString("__index", lib.runAPI)
	return lib, ""
}

func (lib *library) close() { lib.ls.Close() }

// luaToNumber is Lua 5.1's tonumber: a string converts as C's strtod reads
// it whole (decimal, hexadecimal, inf, nan, surrounding white space); with
// a base other than 10 as strtoul reads it.
func luaToNumber(ls *lua.LState) int {
	v := ls.CheckAny(1)
	base := ls.OptInt(2, 10)
	if base != 10 {
		if base < 2 || base > 36 {
			ls.ArgError(2, "base out of range")
		}
		s := strings.TrimSpace(lua.LVAsString(v))
		neg := strings.HasPrefix(s, "-")
		if neg {
			s = s[1:]
		}
		n, err := strconv.ParseUint(s, base, 64)
		if err != nil || s == "" || strings.ContainsAny(s, "+-_") {
			ls.Push(lua.LNil)
			return 1
		}
		f := float64(n)
		if neg {
			f = -f
		}
		ls.Push(lua.LNumber(f))
		return 1
	}
	switch x := v.(type) {
	case lua.LNumber:
		ls.Push(x)
	case lua.LString:
		if f, ok := str2number(string(x)); ok {
			ls.Push(lua.LNumber(f))
		} else {
			ls.Push(lua.LNil)
		}
	default:
		ls.Push(lua.LNil)
	}
	return 1
}

// luaToString is Lua 5.1's tostring: numbers as "%.14g" (lua_Number2str);
// anything else as gopher-lua formats it, honouring __tostring.
func luaToString(ls *lua.LState) int {
	v := ls.CheckAny(1)
	if n, ok := v.(lua.LNumber); ok {
		ls.Push(lua.LString(number2str(float64(n))))
		return 1
	}
	ls.Push(lua.LString(ls.ToStringMeta(v).String()))
	return 1
}

// number2str is C's "%.14g" as glibc prints it.
func number2str(f float64) string {
	switch {
	case math.IsNaN(f):
		if math.Signbit(f) {
			return "-nan"
		}
		return "nan"
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	}
	return strconv.FormatFloat(f, 'g', 14, 64)
}

// str2number is luaO_str2d with glibc's strtod.
func str2number(s string) (float64, bool) {
	s = strings.Trim(s, " \t\n\v\f\r")
	if s == "" || strings.ContainsRune(s, '_') {
		return 0, false
	}
	body := strings.TrimLeft(s, "+-")
	if len(s)-len(body) > 1 {
		return 0, false
	}
	if len(body) > 2 && (body[:2] == "0x" || body[:2] == "0X") && !strings.ContainsAny(body, "pP") {
		s += "p0" // strtod reads hexadecimal without a binary exponent
	}
	f, err := strconv.ParseFloat(s, 64)
	if err != nil && !errors.Is(err, strconv.ErrRange) {
		return 0, false
	}
	return f, true
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// luaErrorText is the text of an error raised while loading.
func luaErrorText(err error) string {
	var ae *lua.ApiError
	if !errors.As(err, &ae) {
		return "ERR " + err.Error()
	}
	if t, ok := ae.Object.(*lua.LTable); ok {
		if e, ok := t.RawGetString("err").(lua.LString); ok {
			return string(e)
		}
	}
	return "ERR " + ae.Object.String()
}

var knownFlags = map[string]bool{
	"no-writes": true, "allow-oom": true, "allow-stale": true, "no-cluster": true, "allow-cross-slot-keys": true,
}

// redis.register_function(name, callback) or
// redis.register_function{function_name=, callback=, flags=, description=}
func (lib *library) registerFunction(ls *lua.LState) int {
	if !lib.loading {
		ls.RaiseError("redis.register_function can only be called on FUNCTION LOAD command")
	}
	f := &function{lib: lib}
	switch ls.GetTop() {
	case 1:
		t, ok := ls.Get(1).(*lua.LTable)
		if !ok {
			ls.RaiseError("calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments).")
		}
		t.ForEach(func(k, v lua.LValue) {
			ks, ok := k.(lua.LString)
			if !ok {
				ls.RaiseError("named argument key given to redis.register_function is not a string")
			}
			switch string(ks) {
			case "function_name":
				s, ok := v.(lua.LString)
				if !ok {
					ls.RaiseError("function_name argument given to redis.register_function must be a string")
				}
				f.name = string(s)
			case "description":
				s, ok := v.(lua.LString)
				if !ok {
					ls.RaiseError("description argument given to redis.register_function must be a string")
				}
				f.desc = string(s)
			case "callback":
				fn, ok := v.(*lua.LFunction)
				if !ok {
					ls.RaiseError("callback argument given to redis.register_function must be a function")
				}
				f.fn = fn
			case "flags":
				ft, ok := v.(*lua.LTable)
				if !ok {
					ls.RaiseError("flags argument to redis.register_function must be a table representing function flags")
				}
				for i := 1; ft.RawGetInt(i) != lua.LNil; i++ {
					fl, ok := ft.RawGetInt(i).(lua.LString)
					if !ok || !knownFlags[string(fl)] {
						ls.RaiseError("unknown flag given")
					}
					f.flags = append(f.flags, string(fl))
					if fl == "no-writes" {
						f.noWrites = true
					}
				}
			default:
				ls.RaiseError("unknown argument given to redis.register_function")
			}
		})
		if f.name == "" {
			ls.RaiseError("redis.register_function must get a function name argument")
		}
		if f.fn == nil {
			ls.RaiseError("redis.register_function must get a callback argument")
		}
	case 2:
		f.name = ls.CheckString(1)
		f.fn = ls.CheckFunction(2)
	default:
		ls.RaiseError("wrong number of arguments to redis.register_function")
	}
	if !validName.MatchString(f.name) {
		ls.RaiseError("Function names can only contain letters, numbers, or underscores(_) and must be at least one character long")
	}
	if _, dup := lib.funcs[f.name]; dup {
		ls.RaiseError("Function already exists in the library")
	}
	lib.funcs[f.name] = f
	lib.order = append(lib.order, f.name)
	return 0
}

// call runs function f with the caller's nested peer c (miniredis's lock is
// held by the trampoline). It returns the function's value or an error reply.
func (lib *library) call(c *server.Peer, f *function, keys, args []string) (lua.LValue, string) {
	lib.callMu.Lock()
	defer lib.callMu.Unlock()
	ls := lib.ls
	p := server.NewPeer(lib.w)
	p.Ctx = c.Ctx // the trampoline's nested context: SELECT lasts for this call
	lib.cur, lib.noWrites, lib.fname = p, f.noWrites, f.name
	defer func() { lib.cur = nil }()
	ls.Push(f.fn)
	ls.Push(stringsTable(ls, keys))
	ls.Push(stringsTable(ls, args))
	if err := ls.PCall(2, 1, lib.errHandler); err != nil {
		return nil, lib.errorReply(err)
	}
	ret := ls.Get(-1)
	ls.Pop(1)
	return ret, ""
}

func stringsTable(ls *lua.LState, ss []string) *lua.LTable {
	t := ls.CreateTable(len(ss), 0)
	for i, s := range ss {
		t.RawSetInt(i+1, lua.LString(s))
	}
	return t
}

// errorHandler turns any error into Redis 7's error table, {err=, source=,
// line=}, with the position of the innermost Lua frame.
func errorHandler(ls *lua.LState) int {
	obj := ls.Get(1)
	t := ls.NewTable()
	msg := "ERR " + obj.String()
	if ot, ok := obj.(*lua.LTable); ok {
		if e, ok := ot.RawGetString("err").(lua.LString); ok {
			msg = string(e)
		}
	}
	t.RawSetString("err", lua.LString(msg))
	for level := 1; level < 64; level++ {
		dbg, ok := ls.GetStack(level)
		if !ok {
			break
		}
		if _, err := ls.GetInfo("Sl", dbg, lua.LNil); err != nil {
			continue
		}
		if dbg.What != "G" && dbg.CurrentLine > 0 {
			t.RawSetString("source", lua.LString("@"+dbg.Source))
			t.RawSetString("line", lua.LNumber(dbg.CurrentLine))
			break
		}
	}
	ls.Push(t)
	return 1
}

// errorReply formats an error that ended a function as Redis does:
// "<err> script: <function>, on <source>:<line>."
func (lib *library) errorReply(err error) string {
	var ae *lua.ApiError
	if !errors.As(err, &ae) {
		return "ERR " + err.Error()
	}
	t, ok := ae.Object.(*lua.LTable)
	if !ok {
		return "ERR " + ae.Object.String()
	}
	msg := lua.LVAsString(t.RawGetString("err"))
	src, sok := t.RawGetString("source").(lua.LString)
	line, lok := t.RawGetString("line").(lua.LNumber)
	if sok && lok {
		msg += fmt.Sprintf(" script: %s, on %s:%d.", lib.fname, src, int(line))
	}
	return msg
}

// commands a script may not call
var notFromScripts = map[string]bool{
	"EVAL": true, "EVAL_RO": true, "EVALSHA": true, "EVALSHA_RO": true, "SCRIPT": true,
	"FCALL": true, "FCALL_RO": true, "FUNCTION": true, internalCmd: true,
	"MULTI": true, "EXEC": true, "DISCARD": true, "WATCH": true, "UNWATCH": true,
	"SUBSCRIBE": true, "PSUBSCRIBE": true, "UNSUBSCRIBE": true, "PUNSUBSCRIBE": true,
	"AUTH": true, "HELLO": true, "QUIT": true, "RESET": true, "CLIENT": true,
}

// commands that write nothing though miniredis does not mark them read-only
var notWriting = map[string]bool{
	"SELECT": true, "TIME": true, "PING": true, "ECHO": true, "INFO": true, "COMMAND": true,
	"PUBSUB": true, "OBJECT": true, "MEMORY": true, "DBSIZE": true,
}

// redisCall is redis.call (raise) or redis.pcall: it runs a command through
// miniredis in the caller's context and converts the reply as Redis does.
func (lib *library) redisCall(raise bool) lua.LGFunction {
	fail := func(ls *lua.LState, msg string) int {
		t := ls.NewTable()
		t.RawSetString("err", lua.LString(msg))
		if raise {
			ls.Error(t, 0)
			return 0
		}
		ls.Push(t)
		return 1
	}
	return func(ls *lua.LState) int {
		top := ls.GetTop()
		if top == 0 {
			return fail(ls, "ERR Please specify at least one argument for this redis lib call")
		}
		args := make([]string, top)
		for i := 1; i <= top; i++ {
			switch v := ls.Get(i).(type) {
			case lua.LString:
				args[i-1] = string(v)
			case lua.LNumber:
				args[i-1] = formatArgNumber(float64(v))
			default:
				return fail(ls, "ERR Lua redis lib command arguments must be strings or integers")
			}
		}
		if lib.cur == nil {
			return fail(ls, "ERR redis.call is only available while a function runs")
		}
		name := strings.ToUpper(args[0])
		switch {
		case notFromScripts[name]:
			return fail(ls, "ERR This Redis command is not allowed from script")
		case !lib.s.srv.IsRegisteredCommand(name):
			return fail(ls, "ERR Unknown Redis command called from script")
		case lib.noWrites && !lib.s.srv.IsReadOnlyCommand(name) && !notWriting[name]:
			return fail(ls, "ERR Write commands are not allowed from read-only scripts.")
		}
		lib.buf.Reset()
		lib.s.srv.Dispatch(lib.cur, args)
		lib.cur.Flush()
		reply, err := readReply(bufio.NewReader(bytes.NewReader(lib.buf.Bytes())))
		if err != nil {
			return fail(ls, "ERR devredis: unreadable reply to "+name+": "+err.Error())
		}
		if e, ok := reply.(respError); ok {
			return fail(ls, string(e))
		}
		ls.Push(respToLua(ls, reply))
		return 1
	}
}

// formatArgNumber is Redis 7.0's "%.17g" for a number passed to redis.call.
func formatArgNumber(f float64) string {
	switch {
	case math.IsNaN(f):
		return "nan"
	case math.IsInf(f, 1):
		return "inf"
	case math.IsInf(f, -1):
		return "-inf"
	}
	return strconv.FormatFloat(f, 'g', 17, 64)
}

func luaErrorReply(ls *lua.LState) int {
	s, ok := ls.Get(1).(lua.LString)
	if !ok || ls.GetTop() != 1 {
		ls.RaiseError("wrong number or type of arguments")
	}
	msg := string(s)
	if !strings.HasPrefix(msg, "-") {
		msg = "-" + msg
	}
	code, rest, found := strings.Cut(msg[1:], " ")
	if !found {
		code, rest = "ERR", msg[1:]
	}
	t := ls.NewTable()
	t.RawSetString("err", lua.LString(code+" "+strings.Trim(rest, "\r\n")))
	ls.Push(t)
	return 1
}

func luaStatusReply(ls *lua.LState) int {
	s, ok := ls.Get(1).(lua.LString)
	if !ok || ls.GetTop() != 1 {
		ls.RaiseError("wrong number or type of arguments")
	}
	t := ls.NewTable()
	t.RawSetString("ok", s)
	ls.Push(t)
	return 1
}

// redis.log writes nothing: devredis logs nothing.
func luaLog(ls *lua.LState) int {
	if ls.GetTop() < 2 {
		ls.RaiseError("redis.log() requires two arguments or more.")
	}
	if lv, ok := ls.Get(1).(lua.LNumber); !ok || lv < 0 || lv > 3 {
		ls.RaiseError("Invalid debug level.")
	}
	return 0
}

func luaSha1hex(ls *lua.LState) int {
	if ls.GetTop() != 1 {
		ls.RaiseError("wrong number of arguments")
	}
	h := sha1.Sum([]byte(lua.LVAsString(ls.Get(1))))
	ls.Push(lua.LString(hex.EncodeToString(h[:])))
	return 1
}

func luaSetresp(ls *lua.LState) int {
	switch ls.CheckInt(1) {
	case 2:
		return 0
	case 3:
		ls.RaiseError("devredis: RESP3 replies inside scripts are not supported (development server)")
	default:
		ls.RaiseError("RESP version must be 2 or 3.")
	}
	return 0
}

// replies ----------------------------------------------------------------------

type (
	respStatus string
	respError  string
)

// readReply reads one RESP reply: int64, string (bulk), nil, []any,
// respStatus, respError (also nested), float64, bool.
func readReply(r *bufio.Reader) (any, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, errors.New("bad line")
	}
	typ, body := line[0], line[1:len(line)-2]
	switch typ {
	case '+':
		return respStatus(body), nil
	case '-':
		return respError(body), nil
	case ':':
		return strconv.ParseInt(body, 10, 64)
	case ',':
		return strconv.ParseFloat(body, 64)
	case '#':
		return body == "t", nil
	case '_':
		return nil, nil
	case '$', '=':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		b := make([]byte, n+2)
		if _, err := io.ReadFull(r, b); err != nil {
			return nil, err
		}
		if typ == '=' && n >= 4 {
			return string(b[4:n]), nil
		}
		return string(b[:n]), nil
	case '*', '~', '>', '%':
		n, err := strconv.Atoi(body)
		if err != nil || n < 0 {
			return nil, err
		}
		if typ == '%' {
			n *= 2
		}
		out := make([]any, n)
		for i := range out {
			if out[i], err = readReply(r); err != nil {
				return nil, err
			}
		}
		return out, nil
	}
	return nil, fmt.Errorf("unknown reply type %q", typ)
}

// respToLua converts a reply as Redis converts it for a script (RESP2).
func respToLua(ls *lua.LState, v any) lua.LValue {
	switch x := v.(type) {
	case nil:
		return lua.LFalse
	case int64:
		return lua.LNumber(x)
	case float64:
		return lua.LNumber(x)
	case bool:
		return lua.LBool(x)
	case string:
		return lua.LString(x)
	case respStatus:
		t := ls.NewTable()
		t.RawSetString("ok", lua.LString(x))
		return t
	case respError:
		t := ls.NewTable()
		t.RawSetString("err", lua.LString(x))
		return t
	case []any:
		t := ls.CreateTable(len(x), 0)
		for i, e := range x {
			t.RawSetInt(i+1, respToLua(ls, e))
		}
		return t
	}
	return lua.LFalse
}

// writeLua writes a function's value as Redis converts it (RESP2); error
// and status replies are tagged for the trampoline.
func (s *Server) writeLua(w *server.Writer, v lua.LValue, depth int) {
	switch x := v.(type) {
	case lua.LString:
		w.WriteBulk(string(x))
	case lua.LNumber:
		w.WriteInt(luaToInt(float64(x)))
	case lua.LBool:
		if x {
			w.WriteInt(1)
		} else {
			w.WriteNull()
		}
	case *lua.LTable:
		if depth > 1000 {
			s.writeTagged(w, "err", "ERR reached lua stack limit")
			return
		}
		if e, ok := x.RawGetString("err").(lua.LString); ok {
			s.writeTagged(w, "err", string(e))
			return
		}
		if o, ok := x.RawGetString("ok").(lua.LString); ok {
			s.writeTagged(w, "ok", string(o))
			return
		}
		n := 0
		for x.RawGetInt(n+1) != lua.LNil {
			n++
		}
		w.WriteLen(n)
		for i := 1; i <= n; i++ {
			s.writeLua(w, x.RawGetInt(i), depth+1)
		}
	default:
		w.WriteNull()
	}
}

// luaToInt is C's (long long) cast of a Lua number as x86-64 does it.
func luaToInt(f float64) int {
	if math.IsNaN(f) || f >= 1<<63 || f < -(1<<63) {
		return math.MinInt
	}
	return int(f)
}

func (s *Server) writeTagged(w *server.Writer, kind, msg string) {
	w.WriteLen(3)
	w.WriteBulk(s.marker)
	w.WriteBulk(kind)
	w.WriteBulk(msg)
}
