package devredis

import (
	"fmt"
	"path"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/alicebob/miniredis/v2/server"
)

// internalCmd is the command the trampoline calls back; it only answers to
// the tokens FCALL hands out.
const internalCmd = "__DEVREDIS_FCALL"

// trampoline is the EVAL script an FCALL runs inside miniredis: it calls the
// function through internalCmd and turns tagged replies ({marker, 'err'|'ok',
// msg}) back into error and status replies, at any depth.
const trampoline = `local m = ARGV[2]
local function fix(v)
  if type(v) == 'table' then
    if v[1] == m then
      if v[2] == 'err' then return {err = v[3]} end
      return {ok = v[3]}
    end
    for i = 1, #v do v[i] = fix(v[i]) end
  end
  return v
end
return fix(redis.call('` + internalCmd + `', ARGV[1]))`

var validName = regexp.MustCompile(`^[A-Za-z0-9_]+$`)

// FCALL / FCALL_RO function numkeys key... arg...
func (s *Server) cmdFcall(c *server.Peer, cmd string, args []string) {
	if len(args) < 2 {
		c.WriteError(fmt.Sprintf("ERR wrong number of arguments for '%s' command", strings.ToLower(cmd)))
		return
	}
	n, err := strconv.Atoi(args[1])
	switch {
	case err != nil:
		c.WriteError("ERR Bad number of keys provided")
		return
	case n < 0:
		c.WriteError("ERR Number of keys can't be negative")
		return
	case n > len(args)-2:
		c.WriteError("ERR Number of keys can't be greater than number of args")
		return
	}
	tok := newToken()
	now := time.Now()
	s.mu.Lock()
	for k, p := range s.pending {
		if now.Sub(p.at) > pendingTTL {
			delete(s.pending, k)
		}
	}
	s.pending[tok] = &pendingCall{fn: args[0], keys: args[2 : 2+n], args: args[2+n:], ro: cmd == "FCALL_RO", at: now}
	s.mu.Unlock()
	s.srv.Dispatch(c, []string{"EVAL", trampoline, "0", tok, s.marker})
}

// cmdInternal runs a parked FCALL. It is reached only from the trampoline,
// so miniredis's lock is held and c carries the nested call context (the
// caller's database, authenticated).
func (s *Server) cmdInternal(c *server.Peer, cmd string, args []string) {
	var pc *pendingCall
	var f *function
	s.mu.Lock()
	if len(args) == 1 {
		pc = s.pending[args[0]]
		delete(s.pending, args[0])
	}
	if pc != nil {
		f = s.funcs[pc.fn]
	}
	s.mu.Unlock()
	if pc == nil {
		c.WriteError(fmt.Sprintf("ERR unknown command '%s'", cmd))
		return
	}
	if f == nil {
		c.Block(func(w *server.Writer) { s.writeTagged(w, "err", "ERR Function not found") })
		return
	}
	if pc.ro && !f.noWrites {
		c.Block(func(w *server.Writer) {
			s.writeTagged(w, "err", "ERR Can not execute a script with write flag using *_ro command.")
		})
		return
	}
	ret, errMsg := f.lib.call(c, f, pc.keys, pc.args)
	c.Block(func(w *server.Writer) {
		if errMsg != "" {
			s.writeTagged(w, "err", errMsg)
			return
		}
		s.writeLua(w, ret, 0)
	})
}

// FUNCTION LOAD|FLUSH|DELETE|LIST|STATS|HELP
func (s *Server) cmdFunction(c *server.Peer, cmd string, args []string) {
	if len(args) == 0 {
		c.WriteError("ERR wrong number of arguments for 'function' command")
		return
	}
	sub, rest := strings.ToUpper(args[0]), args[1:]
	wrongArgs := func() {
		c.WriteError(fmt.Sprintf("ERR wrong number of arguments for 'function|%s' command", strings.ToLower(sub)))
	}
	switch sub {
	case "LOAD":
		replace := false
		if len(rest) == 2 && strings.EqualFold(rest[0], "REPLACE") {
			replace, rest = true, rest[1:]
		}
		if len(rest) != 1 {
			if len(rest) == 2 {
				c.WriteError(fmt.Sprintf("ERR Unknown option given: %s", rest[0]))
				return
			}
			wrongArgs()
			return
		}
		name, err := s.load(rest[0], replace)
		if err != "" {
			c.WriteError(err)
			return
		}
		c.WriteBulk(name)
	case "FLUSH":
		if len(rest) > 1 || (len(rest) == 1 && !strings.EqualFold(rest[0], "ASYNC") && !strings.EqualFold(rest[0], "SYNC")) {
			c.WriteError("ERR FUNCTION FLUSH only supports SYNC|ASYNC option")
			return
		}
		// libraries are dropped, not closed: a call may still be running
		s.mu.Lock()
		s.libs, s.funcs = map[string]*library{}, map[string]*function{}
		s.mu.Unlock()
		c.WriteOK()
	case "DELETE":
		if len(rest) != 1 {
			wrongArgs()
			return
		}
		s.mu.Lock()
		l, ok := s.libs[rest[0]]
		if ok {
			s.removeLocked(l)
		}
		s.mu.Unlock()
		if !ok {
			c.WriteError("ERR Library not found")
			return
		}
		c.WriteOK()
	case "LIST":
		s.functionList(c, rest)
	case "STATS":
		s.mu.Lock()
		nl, nf := len(s.libs), len(s.funcs)
		s.mu.Unlock()
		c.Block(func(w *server.Writer) {
			w.WriteMapLen(2)
			w.WriteBulk("running_script")
			w.WriteNull()
			w.WriteBulk("engines")
			w.WriteMapLen(1)
			w.WriteBulk("LUA")
			w.WriteMapLen(2)
			w.WriteBulk("libraries_count")
			w.WriteInt(nl)
			w.WriteBulk("functions_count")
			w.WriteInt(nf)
		})
	case "HELP":
		c.WriteStrings([]string{
			"FUNCTION <subcommand> [<arg> [value] [opt] ...]. devredis (development only) supports:",
			"LOAD [REPLACE] <FUNCTION CODE>", "FLUSH [ASYNC|SYNC]", "DELETE <LIBRARY NAME>",
			"LIST [WITHCODE] [LIBRARYNAME PATTERN]", "STATS", "HELP",
		})
	case "DUMP", "RESTORE", "KILL":
		c.WriteError(fmt.Sprintf("ERR FUNCTION %s is not supported by devredis (development only server)", sub))
	default:
		c.WriteError(fmt.Sprintf("ERR unknown subcommand '%s'. Try FUNCTION HELP.", args[0]))
	}
}

// load runs FUNCTION LOAD; it returns the library name or an error reply.
func (s *Server) load(code string, replace bool) (string, string) {
	name, errMsg := parseMetadata(code)
	if errMsg != "" {
		return "", errMsg
	}
	s.mu.Lock()
	_, exists := s.libs[name]
	s.mu.Unlock()
	if exists && !replace {
		return "", fmt.Sprintf("ERR Library '%s' already exists", name)
	}
	lib, errMsg := newLibrary(s, name, code)
	if errMsg != "" {
		return "", errMsg
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	old, exists := s.libs[name]
	if exists && !replace {
		lib.close()
		return "", fmt.Sprintf("ERR Library '%s' already exists", name)
	}
	for _, fn := range lib.order {
		if other, ok := s.funcs[fn]; ok && other.lib != old {
			lib.close()
			return "", fmt.Sprintf("ERR Function %s already exists", fn)
		}
	}
	if exists {
		// a call of the old library may still be running under miniredis's
		// lock: it keeps its own Lua state, which is dropped, not closed
		s.removeLocked(old)
	}
	s.libs[name] = lib
	for fn, f := range lib.funcs {
		s.funcs[fn] = f
	}
	return name, ""
}

func (s *Server) removeLocked(l *library) {
	delete(s.libs, l.name)
	for fn := range l.funcs {
		if s.funcs[fn] != nil && s.funcs[fn].lib == l {
			delete(s.funcs, fn)
		}
	}
}

// parseMetadata reads the "#!lua name=<lib>" first line.
func parseMetadata(code string) (string, string) {
	if !strings.HasPrefix(code, "#!") {
		return "", "ERR Missing library metadata"
	}
	line, _, _ := strings.Cut(code[2:], "\n")
	parts := strings.Fields(line)
	if len(parts) == 0 {
		return "", "ERR Missing library metadata"
	}
	if !strings.EqualFold(parts[0], "lua") {
		return "", fmt.Sprintf("ERR Engine '%s' not found", parts[0])
	}
	name := ""
	for _, p := range parts[1:] {
		v, ok := strings.CutPrefix(p, "name=")
		if !ok {
			return "", "ERR Invalid metadata value given: " + p
		}
		name = v
	}
	if name == "" {
		return "", "ERR Library name was not given"
	}
	if !validName.MatchString(name) {
		return "", "ERR Library names can only contain letters, numbers, or underscores(_) and must be at least one character long"
	}
	return name, ""
}

// FUNCTION LIST [WITHCODE] [LIBRARYNAME pattern]
func (s *Server) functionList(c *server.Peer, args []string) {
	withCode, pattern := false, ""
	for i := 0; i < len(args); i++ {
		switch strings.ToUpper(args[i]) {
		case "WITHCODE":
			withCode = true
		case "LIBRARYNAME":
			if i+1 >= len(args) {
				c.WriteError("ERR library name argument was not given")
				return
			}
			i++
			pattern = args[i]
		default:
			c.WriteError(fmt.Sprintf("ERR Unknown argument %s", args[i]))
			return
		}
	}
	s.mu.Lock()
	var libs []*library
	for name, l := range s.libs {
		if pattern != "" {
			if ok, _ := path.Match(pattern, name); !ok {
				continue
			}
		}
		libs = append(libs, l)
	}
	s.mu.Unlock()
	sort.Slice(libs, func(i, j int) bool { return libs[i].name < libs[j].name })
	c.Block(func(w *server.Writer) {
		w.WriteLen(len(libs))
		for _, l := range libs {
			n := 3
			if withCode {
				n++
			}
			w.WriteMapLen(n)
			w.WriteBulk("library_name")
			w.WriteBulk(l.name)
			w.WriteBulk("engine")
			w.WriteBulk("LUA")
			w.WriteBulk("functions")
			w.WriteLen(len(l.order))
			for _, fn := range l.order {
				f := l.funcs[fn]
				w.WriteMapLen(3)
				w.WriteBulk("name")
				w.WriteBulk(f.name)
				w.WriteBulk("description")
				if f.desc == "" {
					w.WriteNull()
				} else {
					w.WriteBulk(f.desc)
				}
				w.WriteBulk("flags")
				w.WriteSetLen(len(f.flags))
				for _, fl := range f.flags {
					w.WriteBulk(fl)
				}
			}
			if withCode {
				w.WriteBulk("library_code")
				w.WriteBulk(l.code)
			}
		}
	})
}
