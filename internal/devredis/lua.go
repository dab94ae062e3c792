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
	L     *lua.LState
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
	L := lua.NewState(lua.Options{SkipOpenLibs: true, RegistrySize: 256 * 20, RegistryMaxSize: 1 << 20})
	lib := &library{s: s, name: name, code: code, L: L, funcs: map[string]*function{}}
	lib.w = bufio.NewWriter(&lib.buf)
	for _, open := range []struct {
		name string
		fn   lua.LGFunction
	}{{lua.BaseLibName, lua.OpenBase}, {lua.TabLibName, lua.OpenTable}, {lua.StringLibName, lua.OpenString}, {lua.MathLibName, lua.OpenMath}} {
		L.Push(L.NewFunction(open.fn))
		L.Push(lua.LString(open.name))
		L.Call(1, 0)
	}
	std := func() *lua.LTable {
		t := L.NewTable()
		L.G.Global.ForEach(func(k, v lua.LValue) {
			if ks, ok := k.(lua.LString); ok && !hiddenGlobals[string(ks)] {
				t.RawSet(k, v)
			}
		})
		return t
	}
	noGlobal := L.NewFunction(func(L *lua.LState) int {
		L.RaiseError("Script attempted to access nonexistent global variable '%s'", L.CheckAny(2).String())
		return 0
	})
	readOnly := L.NewFunction(func(L *lua.LState) int {
		L.RaiseError("Attempt to modify a readonly table")
		return 0
	})
	protect := func(t *lua.LTable) {
		mt := L.NewTable()
		mt.RawSetString("__index", noGlobal)
		mt.RawSetString("__newindex", readOnly)
		L.SetMetatable(t, mt)
	}

	G := L.NewTable()
	runRedis := L.NewTable()
	L.SetFuncs(runRedis, map[string]lua.LGFunction{
		"call":               lib.redisCall(true),
		"pcall":              lib.redisCall(false),
		"error_reply":        luaErrorReply,
		"status_reply":       luaStatusReply,
		"log":                luaLog,
		"sha1hex":            luaSha1hex,
		"setresp":            luaSetresp,
		"set_repl":           func(*lua.LState) int { return 0 },
		"replicate_commands": func(L *lua.LState) int { L.Push(lua.LTrue); return 1 },
		"breakpoint":         func(L *lua.LState) int { L.Push(lua.LFalse); return 1 },
		"debug":              func(*lua.LState) int { return 0 },
		"acl_check_cmd": func(L *lua.LState) int {
			L.Push(lua.LBool(s.srv.IsRegisteredCommand(L.CheckString(1))))
			return 1
		},
	})
	loadRedis := L.NewTable()
	L.SetFuncs(loadRedis, map[string]lua.LGFunction{
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
	L.Push(L.NewFunction(luajson.Loader))
	L.Call(0, 1)
	cjson := L.Get(-1)
	L.Pop(1)

	// gopher-lua's tonumber reads "1e15" or a 20-digit integer as nil; Redis's
	// Lua reads them with strtod, and the engine relies on that
	L.G.Global.RawSetString("tonumber", L.NewFunction(luaToNumber))
	lib.runAPI = std()
	lib.runAPI.RawSetString("redis", runRedis)
	lib.runAPI.RawSetString("cmsgpack", openCmsgpack(L))
	lib.runAPI.RawSetString("cjson", cjson)
	lib.runAPI.RawSetString("_G", G)
	protect(lib.runAPI)
	loadAPI := std()
	loadAPI.RawSetString("redis", loadRedis)
	loadAPI.RawSetString("_G", G)
	protect(loadAPI)
	lib.gmt = L.NewTable()
	lib.gmt.RawSetString("__index", loadAPI)
	lib.gmt.RawSetString("__newindex", readOnly)
	L.SetMetatable(G, lib.gmt)
	lib.errHandler = L.NewFunction(errorHandler)

	// the metadata line becomes an empty line, so that line numbers in
	// errors match the code as given
	body := ""
	if i := strings.IndexByte(code, '\n'); i >= 0 {
		body = code[i:]
	}
	chunk, err := parse.Parse(strings.NewReader(body), "user_function")
	if err != nil {
		L.Close()
		return nil, "ERR Error compiling function: " + oneLine(err.Error())
	}
	proto, err := lua.Compile(chunk, "user_function")
	if err != nil {
		L.Close()
		return nil, "ERR Error compiling function: " + oneLine(err.Error())
	}
	fn := L.NewFunctionFromProto(proto)
	fn.Env = G
	lib.loading = true
	L.Push(fn)
	err = L.PCall(0, 0, nil)
	lib.loading = false
	if err != nil {
		L.Close()
		return nil, "ERR Error registering functions: " + luaErrorText(err)
	}
	if len(lib.funcs) == 0 {
		L.Close()
		return nil, "ERR No functions registered"
	}
	lib.gmt.RawSetString("__index", lib.runAPI)
	return lib, ""
}

func (lib *library) close() { lib.L.Close() }

// luaToNumber is Lua 5.1's tonumber: a string converts as C's strtod reads
// it whole (decimal, hexadecimal, inf, nan, surrounding white space); with
// a base other than 10 as strtoul reads it.
func luaToNumber(L *lua.LState) int {
	v := L.CheckAny(1)
	base := L.OptInt(2, 10)
	if base != 10 {
		if base < 2 || base > 36 {
			L.ArgError(2, "base out of range")
		}
		s := strings.TrimSpace(lua.LVAsString(v))
		neg := strings.HasPrefix(s, "-")
		if neg {
			s = s[1:]
		}
		n, err := strconv.ParseUint(s, base, 64)
		if err != nil || s == "" || strings.ContainsAny(s, "+-_") {
			L.Push(lua.LNil)
			return 1
		}
		f := float64(n)
		if neg {
			f = -f
		}
		L.Push(lua.LNumber(f))
		return 1
	}
	switch x := v.(type) {
	case lua.LNumber:
		L.Push(x)
	case lua.LString:
		if f, ok := str2number(string(x)); ok {
			L.Push(lua.LNumber(f))
		} else {
			L.Push(lua.LNil)
		}
	default:
		L.Push(lua.LNil)
	}
	return 1
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
func (lib *library) registerFunction(L *lua.LState) int {
	if !lib.loading {
		L.RaiseError("redis.register_function can only be called on FUNCTION LOAD command")
	}
	f := &function{lib: lib}
	switch L.GetTop() {
	case 1:
		t, ok := L.Get(1).(*lua.LTable)
		if !ok {
			L.RaiseError("calling redis.register_function with a single argument is only applicable to Lua table (representing named arguments).")
		}
		t.ForEach(func(k, v lua.LValue) {
			ks, ok := k.(lua.LString)
			if !ok {
				L.RaiseError("named argument key given to redis.register_function is not a string")
			}
			switch string(ks) {
			case "function_name":
				s, ok := v.(lua.LString)
				if !ok {
					L.RaiseError("function_name argument given to redis.register_function must be a string")
				}
				f.name = string(s)
			case "description":
				s, ok := v.(lua.LString)
				if !ok {
					L.RaiseError("description argument given to redis.register_function must be a string")
				}
				f.desc = string(s)
			case "callback":
				fn, ok := v.(*lua.LFunction)
				if !ok {
					L.RaiseError("callback argument given to redis.register_function must be a function")
				}
				f.fn = fn
			case "flags":
				ft, ok := v.(*lua.LTable)
				if !ok {
					L.RaiseError("flags argument to redis.register_function must be a table representing function flags")
				}
				for i := 1; ft.RawGetInt(i) != lua.LNil; i++ {
					fl, ok := ft.RawGetInt(i).(lua.LString)
					if !ok || !knownFlags[string(fl)] {
						L.RaiseError("unknown flag given")
					}
					f.flags = append(f.flags, string(fl))
					if fl == "no-writes" {
						f.noWrites = true
					}
				}
			default:
				L.RaiseError("unknown argument given to redis.register_function")
			}
		})
		if f.name == "" {
			L.RaiseError("redis.register_function must get a function name argument")
		}
		if f.fn == nil {
			L.RaiseError("redis.register_function must get a callback argument")
		}
	case 2:
		f.name = L.CheckString(1)
		f.fn = L.CheckFunction(2)
	default:
		L.RaiseError("wrong number of arguments to redis.register_function")
	}
	if !validName.MatchString(f.name) {
		L.RaiseError("Function names can only contain letters, numbers, or underscores(_) and must be at least one character long")
	}
	if _, dup := lib.funcs[f.name]; dup {
		L.RaiseError("Function already exists in the library")
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
	L := lib.L
	p := server.NewPeer(lib.w)
	p.Ctx = c.Ctx // the trampoline's nested context: SELECT lasts for this call
	lib.cur, lib.noWrites, lib.fname = p, f.noWrites, f.name
	defer func() { lib.cur = nil }()
	L.Push(f.fn)
	L.Push(stringsTable(L, keys))
	L.Push(stringsTable(L, args))
	if err := L.PCall(2, 1, lib.errHandler); err != nil {
		return nil, lib.errorReply(err)
	}
	ret := L.Get(-1)
	L.Pop(1)
	return ret, ""
}

func stringsTable(L *lua.LState, ss []string) *lua.LTable {
	t := L.CreateTable(len(ss), 0)
	for i, s := range ss {
		t.RawSetInt(i+1, lua.LString(s))
	}
	return t
}

// errorHandler turns any error into Redis 7's error table, {err=, source=,
// line=}, with the position of the innermost Lua frame.
func errorHandler(L *lua.LState) int {
	obj := L.Get(1)
	t := L.NewTable()
	msg := "ERR " + obj.String()
	if ot, ok := obj.(*lua.LTable); ok {
		if e, ok := ot.RawGetString("err").(lua.LString); ok {
			msg = string(e)
		}
	}
	t.RawSetString("err", lua.LString(msg))
	for level := 1; level < 64; level++ {
		dbg, ok := L.GetStack(level)
		if !ok {
			break
		}
		if _, err := L.GetInfo("Sl", dbg, lua.LNil); err != nil {
			continue
		}
		if dbg.What != "G" && dbg.CurrentLine > 0 {
			t.RawSetString("source", lua.LString("@"+dbg.Source))
			t.RawSetString("line", lua.LNumber(dbg.CurrentLine))
			break
		}
	}
	L.Push(t)
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
	fail := func(L *lua.LState, msg string) int {
		t := L.NewTable()
		t.RawSetString("err", lua.LString(msg))
		if raise {
			L.Error(t, 0)
			return 0
		}
		L.Push(t)
		return 1
	}
	return func(L *lua.LState) int {
		top := L.GetTop()
		if top == 0 {
			return fail(L, "ERR Please specify at least one argument for this redis lib call")
		}
		args := make([]string, top)
		for i := 1; i <= top; i++ {
			switch v := L.Get(i).(type) {
			case lua.LString:
				args[i-1] = string(v)
			case lua.LNumber:
				args[i-1] = formatArgNumber(float64(v))
			default:
				return fail(L, "ERR Lua redis lib command arguments must be strings or integers")
			}
		}
		if lib.cur == nil {
			return fail(L, "ERR redis.call is only available while a function runs")
		}
		name := strings.ToUpper(args[0])
		switch {
		case notFromScripts[name]:
			return fail(L, "ERR This Redis command is not allowed from script")
		case !lib.s.srv.IsRegisteredCommand(name):
			return fail(L, "ERR Unknown Redis command called from script")
		case lib.noWrites && !lib.s.srv.IsReadOnlyCommand(name) && !notWriting[name]:
			return fail(L, "ERR Write commands are not allowed from read-only scripts.")
		}
		lib.buf.Reset()
		lib.s.srv.Dispatch(lib.cur, args)
		lib.cur.Flush()
		reply, err := readReply(bufio.NewReader(bytes.NewReader(lib.buf.Bytes())))
		if err != nil {
			return fail(L, "ERR devredis: unreadable reply to "+name+": "+err.Error())
		}
		if e, ok := reply.(respError); ok {
			return fail(L, string(e))
		}
		L.Push(respToLua(L, reply))
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

func luaErrorReply(L *lua.LState) int {
	s, ok := L.Get(1).(lua.LString)
	if !ok || L.GetTop() != 1 {
		L.RaiseError("wrong number or type of arguments")
	}
	msg := string(s)
	if !strings.HasPrefix(msg, "-") {
		msg = "-" + msg
	}
	code, rest, found := strings.Cut(msg[1:], " ")
	if !found {
		code, rest = "ERR", msg[1:]
	}
	t := L.NewTable()
	t.RawSetString("err", lua.LString(code+" "+strings.Trim(rest, "\r\n")))
	L.Push(t)
	return 1
}

func luaStatusReply(L *lua.LState) int {
	s, ok := L.Get(1).(lua.LString)
	if !ok || L.GetTop() != 1 {
		L.RaiseError("wrong number or type of arguments")
	}
	t := L.NewTable()
	t.RawSetString("ok", s)
	L.Push(t)
	return 1
}

// redis.log writes nothing: devredis logs nothing.
func luaLog(L *lua.LState) int {
	if L.GetTop() < 2 {
		L.RaiseError("redis.log() requires two arguments or more.")
	}
	if lv, ok := L.Get(1).(lua.LNumber); !ok || lv < 0 || lv > 3 {
		L.RaiseError("Invalid debug level.")
	}
	return 0
}

func luaSha1hex(L *lua.LState) int {
	if L.GetTop() != 1 {
		L.RaiseError("wrong number of arguments")
	}
	h := sha1.Sum([]byte(lua.LVAsString(L.Get(1))))
	L.Push(lua.LString(hex.EncodeToString(h[:])))
	return 1
}

func luaSetresp(L *lua.LState) int {
	switch L.CheckInt(1) {
	case 2:
		return 0
	case 3:
		L.RaiseError("devredis: RESP3 replies inside scripts are not supported (development server)")
	default:
		L.RaiseError("RESP version must be 2 or 3.")
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
func respToLua(L *lua.LState, v any) lua.LValue {
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
		t := L.NewTable()
		t.RawSetString("ok", lua.LString(x))
		return t
	case respError:
		t := L.NewTable()
		t.RawSetString("err", lua.LString(x))
		return t
	case []any:
		t := L.CreateTable(len(x), 0)
		for i, e := range x {
			t.RawSetInt(i+1, respToLua(L, e))
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
