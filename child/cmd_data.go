package child

import (
	"errors"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/globalreplica/globalreplica/crdt"
)

// Data commands. Reads are answered by Redis directly from database 0, where
// the user keyspace is stored as clients see it (passthrough), except string
// values, which the child decodes from their state record. Writes are parsed
// and checked here, with Redis's own errors, then run by the engine as one
// atomic op each.

var (
	errInvalidExpire = func(cmd string) error {
		return errors.New("ERR invalid expire time in '" + cmd + "' command")
	}
	errNXXXGTLT   = errors.New("ERR NX and XX, GT or LT options at the same time are not compatible")
	errGTLT       = errors.New("ERR GT and LT options at the same time are not compatible")
	errZNXXX      = errors.New("ERR XX and NX options at the same time are not compatible")
	errZGTLTNX    = errors.New("ERR GT, LT, and/or NX options at the same time are not compatible")
	errZIncrPairs = errors.New("ERR INCR option supports a single increment-element pair")
)

var (
	ro    = []string{FlagReadonly}
	roF   = []string{FlagReadonly, FlagFast}
	wr    = []string{FlagWrite}
	wrF   = []string{FlagWrite, FlagFast}
	wrOOM = []string{FlagWrite, FlagDenyOOM}
	wrOF  = []string{FlagWrite, FlagDenyOOM, FlagFast}
)

func init() {
	register(deferred(
		// generic
		Command{Name: "del", Arity: -2, Flags: wr, FirstKey: 1, LastKey: -1, Step: 1, Group: GroupGeneric, Summary: "Delete keys (what this region observed of them)", Handler: cmdDel},
		Command{Name: "unlink", Arity: -2, Flags: wrF, FirstKey: 1, LastKey: -1, Step: 1, Group: GroupGeneric, Summary: "Delete keys (same as DEL)", Handler: cmdDel},
		Command{Name: "exists", Arity: -2, Flags: roF, FirstKey: 1, LastKey: -1, Step: 1, Group: GroupGeneric, Summary: "Count the keys that exist", Handler: passthrough},
		Command{Name: "type", Arity: 2, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupGeneric, Summary: "Get the type of a key", Handler: passthroughStatus},
		Command{Name: "ttl", Arity: 2, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupGeneric, Summary: "Get the time to live in seconds", Handler: passthrough},
		Command{Name: "pttl", Arity: 2, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupGeneric, Summary: "Get the time to live in milliseconds", Handler: passthrough},
		Command{Name: "expiretime", Arity: 2, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupGeneric, Summary: "Get the expiry as a Unix time in seconds", Handler: passthrough},
		Command{Name: "pexpiretime", Arity: 2, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupGeneric, Summary: "Get the expiry as a Unix time in milliseconds", Handler: passthrough},
		Command{Name: "expire", Arity: -3, Flags: wrF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupGeneric, Summary: "Set a key's time to live in seconds", Handler: cmdExpire(1000, false)},
		Command{Name: "pexpire", Arity: -3, Flags: wrF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupGeneric, Summary: "Set a key's time to live in milliseconds", Handler: cmdExpire(1, false)},
		Command{Name: "expireat", Arity: -3, Flags: wrF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupGeneric, Summary: "Set a key's expiry as a Unix time in seconds", Handler: cmdExpire(1000, true)},
		Command{Name: "pexpireat", Arity: -3, Flags: wrF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupGeneric, Summary: "Set a key's expiry as a Unix time in milliseconds", Handler: cmdExpire(1, true)},
		Command{Name: "persist", Arity: 2, Flags: wrF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupGeneric, Summary: "Remove a key's time to live", Handler: cmdWrite("persist")},
		Command{Name: "scan", Arity: -2, Flags: ro, Group: GroupGeneric, Summary: "Iterate over the keys (MATCH, COUNT, TYPE)", Handler: passthrough},
		Command{Name: "keys", Arity: 2, Flags: ro, Group: GroupGeneric, Summary: "Find the keys matching a pattern", Handler: passthrough},
		Command{Name: "dbsize", Arity: 1, Flags: roF, Group: GroupServer, Summary: "Count the keys", Handler: passthrough},
		Command{Name: "randomkey", Arity: 1, Flags: ro, Group: GroupGeneric, Summary: "Get a random key", Handler: passthrough},
		Command{Name: "touch", Arity: -2, Flags: roF, FirstKey: 1, LastKey: -1, Step: 1, Group: GroupGeneric, Summary: "Count the keys that exist (no access time in active-active)", Handler: passthroughAs("exists")},

		// strings
		Command{Name: "get", Arity: 2, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupString, Summary: "Get the value of a key", Handler: cmdGet},
		Command{Name: "mget", Arity: -2, Flags: roF, FirstKey: 1, LastKey: -1, Step: 1, Group: GroupString, Summary: "Get the values of keys", Handler: cmdMGet},
		Command{Name: "strlen", Arity: 2, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupString, Summary: "Get the length of a value", Handler: cmdStrlen},
		Command{Name: "getrange", Arity: 4, Flags: ro, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupString, Summary: "Get a substring of a value", Handler: cmdGetRange},
		Command{Name: "substr", Arity: 4, Flags: ro, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupString, Summary: "Get a substring of a value (GETRANGE)", Handler: cmdGetRange},
		Command{Name: "set", Arity: -3, Flags: wrOOM, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupString, Summary: "Set the value of a key (NX, XX, GET, EX, PX, EXAT, PXAT, KEEPTTL)", Handler: cmdSet},
		Command{Name: "setnx", Arity: 3, Flags: wrOF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupString, Summary: "Set a value if the key does not exist", Handler: cmdSetNX},
		Command{Name: "setex", Arity: 4, Flags: wrOOM, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupString, Summary: "Set a value and its time to live in seconds", Handler: cmdSetEx(1000, "setex")},
		Command{Name: "psetex", Arity: 4, Flags: wrOOM, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupString, Summary: "Set a value and its time to live in milliseconds", Handler: cmdSetEx(1, "psetex")},
		Command{Name: "getset", Arity: 3, Flags: wrOF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupString, Summary: "Set a value and return the old one", Handler: cmdGetSet},
		Command{Name: "getdel", Arity: 2, Flags: wrF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupString, Summary: "Get a value and delete the key", Handler: cmdWrite("getdel")},
		Command{Name: "mset", Arity: -3, Flags: wrOOM, FirstKey: 1, LastKey: -1, Step: 2, Group: GroupString, Summary: "Set several keys", Handler: cmdMSet},
		Command{Name: "append", Arity: 3, Flags: wrOF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupString, Summary: "Append to a value (a SET of the concatenation: last writer wins)", Handler: cmdWrite("append")},
		Command{Name: "incr", Arity: 2, Flags: wrOF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupString, Summary: "Increment a counter by one", Handler: cmdIncr(1)},
		Command{Name: "decr", Arity: 2, Flags: wrOF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupString, Summary: "Decrement a counter by one", Handler: cmdIncr(-1)},
		Command{Name: "incrby", Arity: 3, Flags: wrOF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupString, Summary: "Increment a counter", Handler: cmdIncrBy(1)},
		Command{Name: "decrby", Arity: 3, Flags: wrOF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupString, Summary: "Decrement a counter", Handler: cmdIncrBy(-1)},
		Command{Name: "incrbyfloat", Arity: 3, Flags: wrOF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupString, Summary: "Increment a float counter", Handler: cmdIncrByFloat},

		// hashes
		Command{Name: "hset", Arity: -4, Flags: wrOF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupHash, Summary: "Set hash fields", Handler: cmdHSet(false)},
		Command{Name: "hmset", Arity: -4, Flags: wrOF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupHash, Summary: "Set hash fields (deprecated form of HSET)", Handler: cmdHSet(true)},
		Command{Name: "hsetnx", Arity: 4, Flags: wrOF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupHash, Summary: "Set a hash field if it does not exist", Handler: cmdWrite("hsetnx")},
		Command{Name: "hdel", Arity: -3, Flags: wrF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupHash, Summary: "Delete hash fields (what this region observed of them)", Handler: cmdWrite("hdel")},
		Command{Name: "hincrby", Arity: 4, Flags: wrOF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupHash, Summary: "Increment a hash field", Handler: cmdHIncrBy},
		Command{Name: "hincrbyfloat", Arity: 4, Flags: wrOF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupHash, Summary: "Increment a hash field by a float", Handler: cmdHIncrByFloat},
		Command{Name: "hget", Arity: 3, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupHash, Summary: "Get a hash field", Handler: passthrough},
		Command{Name: "hmget", Arity: -3, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupHash, Summary: "Get hash fields", Handler: passthrough},
		Command{Name: "hgetall", Arity: 2, Flags: ro, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupHash, Summary: "Get all fields and values of a hash", Handler: passthrough},
		Command{Name: "hexists", Arity: 3, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupHash, Summary: "Check that a hash field exists", Handler: passthrough},
		Command{Name: "hlen", Arity: 2, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupHash, Summary: "Count the fields of a hash", Handler: passthrough},
		Command{Name: "hkeys", Arity: 2, Flags: ro, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupHash, Summary: "Get the fields of a hash", Handler: passthrough},
		Command{Name: "hvals", Arity: 2, Flags: ro, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupHash, Summary: "Get the values of a hash", Handler: passthrough},
		Command{Name: "hstrlen", Arity: 3, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupHash, Summary: "Get the length of a hash field's value", Handler: passthrough},
		Command{Name: "hrandfield", Arity: -2, Flags: ro, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupHash, Summary: "Get random hash fields", Handler: passthrough},
		Command{Name: "hscan", Arity: -3, Flags: ro, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupHash, Summary: "Iterate over a hash", Handler: passthrough},

		// sets
		Command{Name: "sadd", Arity: -3, Flags: wrOF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSet, Summary: "Add set members (add wins over concurrent removes)", Handler: cmdWrite("sadd")},
		Command{Name: "srem", Arity: -3, Flags: wrF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSet, Summary: "Remove set members (what this region observed of them)", Handler: cmdWrite("srem")},
		Command{Name: "smembers", Arity: 2, Flags: ro, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSet, Summary: "Get the members of a set", Handler: passthrough},
		Command{Name: "sismember", Arity: 3, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSet, Summary: "Check set membership", Handler: passthrough},
		Command{Name: "smismember", Arity: -3, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSet, Summary: "Check the membership of several members", Handler: passthrough},
		Command{Name: "scard", Arity: 2, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSet, Summary: "Count the members of a set", Handler: passthrough},
		Command{Name: "srandmember", Arity: -2, Flags: ro, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSet, Summary: "Get random members", Handler: passthrough},
		Command{Name: "sinter", Arity: -2, Flags: ro, FirstKey: 1, LastKey: -1, Step: 1, Group: GroupSet, Summary: "Intersect sets", Handler: passthrough},
		Command{Name: "sunion", Arity: -2, Flags: ro, FirstKey: 1, LastKey: -1, Step: 1, Group: GroupSet, Summary: "Union of sets", Handler: passthrough},
		Command{Name: "sdiff", Arity: -2, Flags: ro, FirstKey: 1, LastKey: -1, Step: 1, Group: GroupSet, Summary: "Difference of sets", Handler: passthrough},
		Command{Name: "sscan", Arity: -3, Flags: ro, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSet, Summary: "Iterate over a set", Handler: passthrough},

		// sorted sets
		Command{Name: "zadd", Arity: -4, Flags: wrOF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSortedSet, Summary: "Add members or set scores (NX, XX, GT, LT, CH, INCR)", Handler: cmdZAdd},
		Command{Name: "zincrby", Arity: 4, Flags: wrOF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSortedSet, Summary: "Increment a score (increments add up across regions)", Handler: cmdZIncrBy},
		Command{Name: "zrem", Arity: -3, Flags: wrF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSortedSet, Summary: "Remove members (what this region observed of them)", Handler: cmdWrite("zrem")},
		Command{Name: "zscore", Arity: 3, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSortedSet, Summary: "Get a member's score", Handler: passthrough},
		Command{Name: "zmscore", Arity: -3, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSortedSet, Summary: "Get several members' scores", Handler: passthrough},
		Command{Name: "zcard", Arity: 2, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSortedSet, Summary: "Count the members", Handler: passthrough},
		Command{Name: "zcount", Arity: 4, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSortedSet, Summary: "Count the members in a score range", Handler: passthrough},
		Command{Name: "zlexcount", Arity: 4, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSortedSet, Summary: "Count the members in a lexical range", Handler: passthrough},
		Command{Name: "zrank", Arity: -3, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSortedSet, Summary: "Get a member's rank", Handler: passthrough},
		Command{Name: "zrevrank", Arity: -3, Flags: roF, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSortedSet, Summary: "Get a member's rank, high to low", Handler: passthrough},
		Command{Name: "zrange", Arity: -4, Flags: ro, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSortedSet, Summary: "Get members by index, score or lex (BYSCORE, BYLEX, REV, LIMIT, WITHSCORES)", Handler: passthrough},
		Command{Name: "zrangebyscore", Arity: -4, Flags: ro, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSortedSet, Summary: "Get members in a score range", Handler: passthrough},
		Command{Name: "zrevrangebyscore", Arity: -4, Flags: ro, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSortedSet, Summary: "Get members in a score range, high to low", Handler: passthrough},
		Command{Name: "zrangebylex", Arity: -4, Flags: ro, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSortedSet, Summary: "Get members in a lexical range", Handler: passthrough},
		Command{Name: "zrevrangebylex", Arity: -4, Flags: ro, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSortedSet, Summary: "Get members in a lexical range, high to low", Handler: passthrough},
		Command{Name: "zrevrange", Arity: -4, Flags: ro, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSortedSet, Summary: "Get members by index, high to low", Handler: passthrough},
		Command{Name: "zrandmember", Arity: -2, Flags: ro, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSortedSet, Summary: "Get random members", Handler: passthrough},
		Command{Name: "zscan", Arity: -3, Flags: ro, FirstKey: 1, LastKey: 1, Step: 1, Group: GroupSortedSet, Summary: "Iterate over a sorted set", Handler: passthrough},
	)...)
}

// deferred marks data commands as deferring their replies: each handler
// submits its request to the engine on the connection's lane and replies
// when it ran, so a client's pipelined commands overlap their round trips
// and many clients' commands share pipelines and function calls (see
// Engine.Submit).
func deferred(cmds ...Command) []Command {
	for i := range cmds {
		cmds[i].Defers = true
	}
	return cmds
}

// submit runs a request on the connection's lane and calls finish with its
// reply once it ran; an error reply is written for finish. A connection's
// requests are queued and go to the lane together, as one group, before
// the first of their replies is finished (Server.flushQueued): the requests
// of a pipelined read cost one hand-over to the lane, not one each.
func submit(c *Call, r *Request, finish func(c *Call, v any)) {
	if c.conn != nil {
		c.conn.queued = append(c.conn.queued, r)
	} else {
		c.Engine().Submit(0, r)
	}
	c.Later(func(c *Call) {
		v, err := r.Wait(c.Ctx)
		if err != nil {
			c.WriteError(err)
			return
		}
		finish(c, v)
	})
}

// read submits a read of database 0.
func read(c *Call, args []any, finish func(c *Call, v any)) { submit(c, NewRead(args...), finish) }

// writeCmd submits a local write.
func writeCmd(c *Call, args []string, finish func(c *Call, v any)) {
	submit(c, NewWrite(args...), finish)
}

// writeAny submits a local write whose arguments are boxed already: the
// engine's command name and the arguments as strings or the client's
// argument bytes (which the handlers may keep, see Call).
func writeAny(c *Call, args []any, finish func(c *Call, v any)) {
	submit(c, newWrite(args...), finish)
}

// writeArgs submits the local write cmd with the command's arguments after
// the name, unchanged.
func writeArgs(c *Call, cmd string, finish func(c *Call, v any)) {
	args := make([]any, 0, len(c.Args))
	args = append(args, cmd)
	for _, a := range c.Args[1:] {
		args = append(args, a)
	}
	writeAny(c, args, finish)
}

// Boxed constant arguments: a string converted to any at run time is an
// allocation, these are not.
var (
	anyZero  any = "0"
	anyOne   any = "1"
	anyMinus any = "-1"
	anyRel   any = "rel"
	anyAbs   any = "abs"
)

// argStrings returns the command's arguments after the name.
func argStrings(c *Call) []string {
	out := make([]string, len(c.Args)-1)
	for i, a := range c.Args[1:] {
		out[i] = string(a)
	}
	return out
}

func writeReply(c *Call, v any) { c.WriteReply(v) }

// passthrough answers a read from database 0, where the user keyspace is
// stored as clients see it; Redis's own reply and errors are forwarded.
func passthrough(c *Call) { forward(c, c.Args, false) }

// passthroughStatus is passthrough for commands whose reply is a status.
func passthroughStatus(c *Call) { forward(c, c.Args, true) }

// passthroughAs forwards under another command name with the same arguments.
func passthroughAs(name string) func(*Call) {
	return func(c *Call) {
		args := append([][]byte{[]byte(name)}, c.Args[1:]...)
		forward(c, args, false)
	}
}

func forward(c *Call, args [][]byte, status bool) {
	argv := make([]any, len(args))
	argv[0] = string(args[0])
	for i, a := range args[1:] {
		argv[i+1] = a // the client's bytes: Call lets handlers keep them
	}
	read(c, argv, func(c *Call, v any) {
		if s, ok := v.(string); ok && status {
			c.WriteStatus(s)
			return
		}
		c.WriteReply(v)
	})
}

// cmdWrite runs a write whose arguments go to the engine unchanged and
// whose reply is forwarded.
func cmdWrite(cmd string) func(*Call) {
	return func(c *Call) { writeArgs(c, cmd, writeReply) }
}

func cmdDel(c *Call) { writeArgs(c, "del", writeReply) }

// getValue reads a string key and calls finish with its value as clients
// see it (ok false: no such key).
func getValue(c *Call, key []byte, finish func(c *Call, v string, ok bool)) {
	read(c, []any{"GET", key}, func(c *Call, raw any) {
		s, isStr := raw.(string)
		if !isStr {
			finish(c, "", false)
			return
		}
		if v, ok, fast := crdt.StringRecordValue(s); fast {
			finish(c, v, ok)
			return
		}
		v, ok, err := decodeString(string(key), s)
		if err != nil {
			c.WriteError(err)
			return
		}
		finish(c, v, ok)
	})
}

func cmdGet(c *Call) {
	getValue(c, c.Args[1], func(c *Call, v string, ok bool) {
		if !ok {
			c.WriteNull()
			return
		}
		c.WriteBulkString(v)
	})
}

func cmdMGet(c *Call) {
	keys := argStrings(c)
	argv := make([]any, 0, len(keys)+1)
	argv = append(argv, "MGET")
	for _, k := range keys {
		argv = append(argv, k)
	}
	read(c, argv, func(c *Call, v any) {
		raws, _ := v.([]any)
		vals := make([]*string, len(keys))
		for i, raw := range raws {
			s, isStr := raw.(string)
			if !isStr || i >= len(keys) {
				continue
			}
			val, ok, err := decodeString(keys[i], s)
			if err != nil {
				c.WriteError(err)
				return
			}
			if ok {
				vals[i] = &val
			}
		}
		c.WriteArray(len(vals))
		for _, v := range vals {
			if v == nil {
				c.WriteNull()
			} else {
				c.WriteBulkString(*v)
			}
		}
	})
}

func cmdStrlen(c *Call) {
	getValue(c, c.Args[1], func(c *Call, v string, _ bool) { c.WriteInt(int64(len(v))) })
}

func cmdGetRange(c *Call) {
	start, err1 := ParseInt(c.Args[2])
	end, err2 := ParseInt(c.Args[3])
	if err1 != nil || err2 != nil {
		c.WriteError(ErrNotInteger)
		return
	}
	getValue(c, c.Args[1], func(c *Call, v string, _ bool) { c.WriteBulkString(substr(v, start, end)) })
}

// substr is GETRANGE's rule: negative offsets count from the end, the range
// is clipped, an empty range is "".
func substr(s string, start, end int64) string {
	n := int64(len(s))
	if start < 0 && end < 0 && start > end {
		return ""
	}
	if start < 0 {
		start = max(n+start, 0)
	}
	if end < 0 {
		end = max(n+end, 0)
	}
	end = min(end, n-1)
	if n == 0 || start > end {
		return ""
	}
	return s[start : end+1]
}

// setArgs are the engine's normalized SET arguments.
type setArgs struct {
	nx, xx, get, keepTTL bool
	mode                 string // "", "rel", "abs"
	ms                   int64
}

// engine returns the engine command: set key val nx xx get keepttl mode ms.
func (a setArgs) engine(key, val []byte) []any {
	var mode, ms any = "", anyZero
	switch a.mode {
	case "rel":
		mode = anyRel
	case "abs":
		mode = anyAbs
	}
	if a.ms != 0 {
		ms = strconv.FormatInt(a.ms, 10)
	}
	return []any{"set", key, val, b01(a.nx), b01(a.xx), b01(a.get), b01(a.keepTTL), mode, ms}
}

func b01(b bool) any {
	if b {
		return anyOne
	}
	return anyZero
}

// expireMs converts an expire argument to milliseconds (unit 1000 for
// seconds), with Redis's overflow checks: a relative time must also fit
// when added to the current time.
func expireMs(b []byte, unit int64, abs bool, cmd string) (int64, error) {
	n, err := ParseInt(b)
	if err != nil {
		return 0, ErrNotInteger
	}
	if n > math.MaxInt64/unit || n < math.MinInt64/unit {
		return 0, errInvalidExpire(cmd)
	}
	ms := n * unit
	if !abs && ms > math.MaxInt64-time.Now().UnixMilli() {
		return 0, errInvalidExpire(cmd)
	}
	return ms, nil
}

func parseSet(args [][]byte) (setArgs, error) {
	var a setArgs
	expireSet := false
	for i := 0; i < len(args); i++ {
		opt := strings.ToUpper(string(args[i]))
		switch opt {
		case "NX":
			if a.xx {
				return a, ErrSyntax
			}
			a.nx = true
		case "XX":
			if a.nx {
				return a, ErrSyntax
			}
			a.xx = true
		case "GET":
			a.get = true
		case "KEEPTTL":
			if expireSet {
				return a, ErrSyntax
			}
			a.keepTTL = true
		case "EX", "PX", "EXAT", "PXAT":
			if expireSet || a.keepTTL || i+1 >= len(args) {
				return a, ErrSyntax
			}
			i++
			unit := int64(1000)
			if opt[0] == 'P' {
				unit = 1
			}
			abs := strings.HasSuffix(opt, "AT")
			ms, err := expireMs(args[i], unit, abs, "set")
			if err != nil {
				return a, err
			}
			if ms <= 0 {
				return a, errInvalidExpire("set")
			}
			a.ms, a.mode, expireSet = ms, "rel", true
			if abs {
				a.mode = "abs"
			}
		default:
			return a, ErrSyntax
		}
	}
	return a, nil
}

func cmdSet(c *Call) {
	a, err := parseSet(c.Args[3:])
	if err != nil {
		c.WriteError(err)
		return
	}
	writeAny(c, a.engine(c.Args[1], c.Args[2]), func(c *Call, v any) {
		if a.get || v == nil {
			c.WriteReply(v)
			return
		}
		c.WriteOK()
	})
}

func cmdSetNX(c *Call) {
	writeAny(c, setArgs{nx: true}.engine(c.Args[1], c.Args[2]), func(c *Call, v any) {
		if v == nil {
			c.WriteInt(0)
		} else {
			c.WriteInt(1)
		}
	})
}

func cmdSetEx(unit int64, name string) func(*Call) {
	return func(c *Call) {
		ms, err := expireMs(c.Args[2], unit, false, name)
		if err != nil {
			c.WriteError(err)
			return
		}
		if ms <= 0 {
			c.WriteError(errInvalidExpire(name))
			return
		}
		writeAny(c, setArgs{mode: "rel", ms: ms}.engine(c.Args[1], c.Args[3]), func(c *Call, _ any) { c.WriteOK() })
	}
}

func cmdGetSet(c *Call) {
	writeAny(c, setArgs{get: true}.engine(c.Args[1], c.Args[2]), writeReply)
}

func cmdMSet(c *Call) {
	if len(c.Args)%2 == 0 {
		c.WriteErrorString("ERR wrong number of arguments for '" + strings.ToLower(c.Arg(0)) + "' command")
		return
	}
	writeArgs(c, "mset", func(c *Call, _ any) { c.WriteOK() })
}

func cmdIncr(d int64) func(*Call) {
	return func(c *Call) {
		delta := anyOne
		if d < 0 {
			delta = anyMinus
		}
		writeAny(c, []any{"incrby", c.Args[1], delta}, writeReply)
	}
}

func cmdIncrBy(sign int64) func(*Call) {
	return func(c *Call) {
		d, err := ParseInt(c.Args[2])
		if err != nil {
			c.WriteError(err)
			return
		}
		if sign < 0 {
			if d == math.MinInt64 {
				c.WriteErrorString("ERR decrement would overflow")
				return
			}
			d = -d
		}
		writeAny(c, []any{"incrby", c.Args[1], strconv.FormatInt(d, 10)}, writeReply)
	}
}

// floatIncrement parses the increment of INCRBYFLOAT and HINCRBYFLOAT in
// its canonical form; on bad input it answers the error and ok is false.
func floatIncrement(c *Call, arg int) (string, bool) {
	d, err := ParseFloat(c.Args[arg])
	if err == nil && math.IsInf(d, 0) {
		err = crdt.ErrNaN
	}
	if err != nil {
		c.WriteError(err)
		return "", false
	}
	return crdt.FormatFloat(d), true
}

func cmdIncrByFloat(c *Call) {
	if d, ok := floatIncrement(c, 2); ok {
		writeCmd(c, []string{"incrbyfloat", c.Arg(1), d}, writeReply)
	}
}

func cmdExpire(unit int64, abs bool) func(*Call) {
	return func(c *Call) {
		name := strings.ToLower(c.Arg(0))
		ms, err := expireMs(c.Args[2], unit, abs, name)
		if err != nil {
			c.WriteError(err)
			return
		}
		var nx, xx, gt, lt bool
		for _, o := range c.Args[3:] {
			switch strings.ToUpper(string(o)) {
			case "NX":
				nx = true
			case "XX":
				xx = true
			case "GT":
				gt = true
			case "LT":
				lt = true
			default:
				c.WriteErrorString("ERR Unsupported option " + string(o))
				return
			}
		}
		cond := ""
		switch {
		case nx && (xx || gt || lt):
			c.WriteError(errNXXXGTLT)
			return
		case gt && lt:
			c.WriteError(errGTLT)
			return
		case nx:
			cond = "nx"
		case xx && gt:
			cond = "gt" // XX GT: only volatile keys, and GT already needs a TTL
		case xx && lt:
			cond = "xxlt"
		case xx:
			cond = "xx"
		case gt:
			cond = "gt"
		case lt:
			cond = "lt"
		}
		mode := "rel"
		if abs {
			mode = "abs"
		}
		writeCmd(c, []string{"expire", c.Arg(1), mode, strconv.FormatInt(ms, 10), cond}, writeReply)
	}
}

func cmdHSet(hmset bool) func(*Call) {
	return func(c *Call) {
		if len(c.Args)%2 != 0 {
			c.WriteErrorString("ERR wrong number of arguments for '" + strings.ToLower(c.Arg(0)) + "' command")
			return
		}
		writeArgs(c, "hset", func(c *Call, v any) {
			if hmset {
				c.WriteOK()
				return
			}
			c.WriteReply(v)
		})
	}
}

func cmdHIncrBy(c *Call) {
	d, err := ParseInt(c.Args[3])
	if err != nil {
		c.WriteError(err)
		return
	}
	writeCmd(c, []string{"hincrby", c.Arg(1), c.Arg(2), strconv.FormatInt(d, 10)}, writeReply)
}

func cmdHIncrByFloat(c *Call) {
	if d, ok := floatIncrement(c, 3); ok {
		writeCmd(c, []string{"hincrbyfloat", c.Arg(1), c.Arg(2), d}, writeReply)
	}
}

func cmdZAdd(c *Call) {
	var nx, xx, gt, lt, ch, incr bool
	i := 2
options:
	for ; i < len(c.Args); i++ {
		switch strings.ToUpper(string(c.Args[i])) {
		case "NX":
			nx = true
		case "XX":
			xx = true
		case "GT":
			gt = true
		case "LT":
			lt = true
		case "CH":
			ch = true
		case "INCR":
			incr = true
		default:
			break options
		}
	}
	rest := c.Args[i:]
	switch {
	case len(rest) == 0 || len(rest)%2 != 0:
		c.WriteError(ErrSyntax)
		return
	case nx && xx:
		c.WriteError(errZNXXX)
		return
	case (gt && nx) || (lt && nx) || (gt && lt):
		c.WriteError(errZGTLTNX)
		return
	case incr && len(rest) > 2:
		c.WriteError(errZIncrPairs)
		return
	}
	args := []string{c.Arg(1), zflags(nx, xx, gt, lt, ch, incr)}
	for j := 0; j < len(rest); j += 2 {
		f, err := ParseFloat(rest[j])
		if err != nil {
			c.WriteError(err)
			return
		}
		args = append(args, crdt.FormatFloat(f), string(rest[j+1]))
	}
	writeCmd(c, append([]string{"zadd"}, args...), writeReply)
}

func zflags(nx, xx, gt, lt, ch, incr bool) string {
	var b strings.Builder
	for _, f := range []struct {
		on bool
		c  byte
	}{{nx, 'n'}, {xx, 'x'}, {gt, 'g'}, {lt, 'l'}, {ch, 'c'}, {incr, 'i'}} {
		if f.on {
			b.WriteByte(f.c)
		}
	}
	return b.String()
}

func cmdZIncrBy(c *Call) {
	d, err := ParseFloat(c.Args[2])
	if err != nil {
		c.WriteError(err)
		return
	}
	writeCmd(c, []string{"zincrby", c.Arg(1), crdt.FormatFloat(d), c.Arg(3)}, writeReply)
}
