package child

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/crdt"
)

// The engine's Lua, loaded once into Redis as one function library
// (FUNCTION LOAD) and called by name (FCALL): lib.lua holds the crdt rules,
// write.lua and apply.lua the two entry points, register.lua registers them.
// A library is defined once per load, not once per call as an EVAL script
// is, and it is kept in the RDB/AOF and copied to replicas, so a promoted
// replica has it.
var (
	//go:embed lua/lib.lua
	luaLib string
	//go:embed lua/write.lua
	luaWrite string
	//go:embed lua/apply.lua
	luaApply string
	//go:embed lua/register.lua
	luaRegister string

	library = "#!lua name=globalreplica\n" + luaLib + luaWrite + luaApply + luaRegister
)

// Layout of the Redis database 1, where the engine keeps everything that is
// not user-visible (docs/storage.md).
const (
	metaDB     = 1
	keyMeta    = "meta"    // hash: seq, ms, lc (HLC), grace
	keyApplied = "applied" // hash: origin -> last applied seq
	keyLog     = "log"     // list: encoded local ops not yet shipped
)

// Engine errors.
var (
	// ErrGap is returned by Apply when a batch does not continue the applied
	// vector: ops the destination needs are missing (brief, invariant 6).
	ErrGap = errors.New("child: gap in the op sequence")
	// ErrCorruptState is returned when a stored state record does not decode.
	ErrCorruptState = errors.New("child: corrupt state record")
)

// DefaultGrace is how long the state of an expired key is kept after its
// deadline, so that late ops from other regions still merge into it. It
// matches the default stream retention.
const DefaultGrace = 7 * 24 * time.Hour

// EngineConfig configures the Redis engine of a region.
type EngineConfig struct {
	Instance string        // global instance name
	Region   string        // this region's id
	Grace    time.Duration // see DefaultGrace
}

func (c *EngineConfig) validate() error {
	if !crdt.ValidRegion(c.Region) {
		return fmt.Errorf("child: region %q: %w", c.Region, crdt.ErrBadRegion)
	}
	if c.Grace == 0 {
		c.Grace = DefaultGrace
	}
	return nil
}

// Engine is the region's Redis engine. A local write is one script call
// that, atomically inside Redis, advances the HLC, takes the next sequence
// number, merges the op into the key's state and appends it to the op log.
// A remote batch is one script call that merges the ops and raises the
// applied vector. Reads are single commands on database 0, where user keys
// are stored as clients see them. Engine is safe for concurrent use.
type Engine struct {
	cfg  EngineConfig
	rdb  *redis.Client // database 0
	meta *redis.Client // database 1
	log  zerolog.Logger
}

// NewEngine returns an engine on a go-redis client of database 0 and loads
// the scripts.
func NewEngine(ctx context.Context, cfg EngineConfig, rdb *redis.Client, log zerolog.Logger) (*Engine, error) {
	if rdb == nil {
		return nil, errors.New("child: nil redis client")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if db := rdb.Options().DB; db != 0 {
		return nil, fmt.Errorf("child: the redis client must use database 0, not %d", db)
	}
	mopt := *rdb.Options()
	mopt.DB = metaDB
	e := &Engine{cfg: cfg, rdb: rdb, meta: redis.NewClient(&mopt), log: log}
	if err := e.load(ctx); err != nil {
		_ = e.meta.Close()
		return nil, err
	}
	if err := e.meta.HSet(ctx, keyMeta, "grace", cfg.Grace.Milliseconds()).Err(); err != nil {
		_ = e.meta.Close()
		return nil, fmt.Errorf("child: writing engine metadata: %w", err)
	}
	return e, nil
}

// Close releases the engine's own connections (not the client it was given).
func (e *Engine) Close() error { return e.meta.Close() }

// Region returns the engine's region id.
func (e *Engine) Region() string { return e.cfg.Region }

// Redis returns the client of database 0, for reads.
func (e *Engine) Redis() *redis.Client { return e.rdb }

// Write runs one local write command of the write script: cmd is the
// script's command name (set, incrby, hset, ...) and args its normalized
// arguments. The reply is the script's: int64, string, nil, []any, or an
// error carrying Redis's own error text (redis.Error).
func (e *Engine) Write(ctx context.Context, cmd string, args ...string) (any, error) {
	argv := make([]any, 0, len(args)+2)
	argv = append(argv, e.cfg.Region, cmd)
	for _, a := range args {
		argv = append(argv, a)
	}
	v, err := e.fcall(ctx, "gr_write", argv)
	if errors.Is(err, redis.Nil) {
		return nil, nil
	}
	return v, err
}

// load loads the function library into Redis, replacing an older one.
func (e *Engine) load(ctx context.Context) error {
	if err := e.rdb.FunctionLoadReplace(ctx, library).Err(); err != nil {
		return fmt.Errorf("child: loading the function library into redis (needs Redis 7 or later): %w", err)
	}
	return nil
}

// fcall calls a library function, loading the library again if Redis lost
// it (a restart without persistence, a FUNCTION FLUSH).
func (e *Engine) fcall(ctx context.Context, fn string, argv []any) (any, error) {
	v, err := e.rdb.FCall(ctx, fn, nil, argv...).Result()
	if isNoFunction(err) {
		if err := e.load(ctx); err != nil {
			return nil, err
		}
		v, err = e.rdb.FCall(ctx, fn, nil, argv...).Result()
	}
	return v, err
}

func isNoFunction(err error) bool {
	return err != nil && strings.Contains(err.Error(), "Function not found")
}

// WritePipeline runs several local write commands in one round trip to
// Redis (each still its own atomic script call and its own op), for
// clients that pipeline. Replies and errors are per command.
func (e *Engine) WritePipeline(ctx context.Context, cmds [][]string) ([]any, []error) {
	replies, errs := make([]any, len(cmds)), make([]error, len(cmds))
	run := func() bool {
		pipe := e.rdb.Pipeline()
		res := make([]*redis.Cmd, len(cmds))
		for i, c := range cmds {
			argv := make([]any, 0, len(c)+1)
			argv = append(argv, e.cfg.Region)
			for _, a := range c {
				argv = append(argv, a)
			}
			res[i] = pipe.FCall(ctx, "gr_write", nil, argv...)
		}
		_, _ = pipe.Exec(ctx)
		lost := false
		for i, r := range res {
			replies[i], errs[i] = r.Result()
			if errors.Is(errs[i], redis.Nil) {
				replies[i], errs[i] = nil, nil
			}
			lost = lost || isNoFunction(errs[i])
		}
		return lost
	}
	if run() {
		// Redis lost the library: a call that failed for that did nothing
		if err := e.load(ctx); err != nil {
			for i := range errs {
				errs[i] = err
			}
			return replies, errs
		}
		run()
	}
	return replies, errs
}

// ApplyResult is what one remote batch did.
type ApplyResult struct {
	Applied   int            // ops applied (ops at or below the applied vector are skipped)
	LastSeq   uint64         // the origin's applied sequence number afterwards
	Conflicts map[string]int // conflicts resolved, by kind
}

// Apply merges a batch of encoded ops of one origin, in sequence order, and
// raises the origin's applied sequence in the same atomic step. Ops already
// applied are skipped; a batch that does not continue from the applied
// sequence fails with ErrGap and changes nothing.
func (e *Engine) Apply(ctx context.Context, origin string, ops [][]byte) (ApplyResult, error) {
	argv := make([]any, 0, len(ops)+1)
	argv = append(argv, origin)
	for _, op := range ops {
		argv = append(argv, op)
	}
	v, err := e.fcall(ctx, "gr_apply", argv)
	if err != nil {
		if strings.HasPrefix(err.Error(), "GAP ") {
			return ApplyResult{}, fmt.Errorf("%w: %s", ErrGap, err.Error())
		}
		return ApplyResult{}, fmt.Errorf("child: applying ops of %s: %w", origin, err)
	}
	arr, ok := v.([]any)
	if !ok || len(arr) < 2 {
		return ApplyResult{}, fmt.Errorf("child: unexpected apply reply %v", v)
	}
	res := ApplyResult{Applied: int(toInt(arr[0])), LastSeq: uint64(toInt(arr[1]))}
	for i := 2; i+1 < len(arr); i += 2 {
		if res.Conflicts == nil {
			res.Conflicts = map[string]int{}
		}
		k, _ := arr[i].(string)
		res.Conflicts[k] += int(toInt(arr[i+1]))
	}
	return res, nil
}

func toInt(v any) int64 {
	n, _ := v.(int64)
	return n
}

// Get returns a string key's value as clients see it. ok is false when the
// key does not exist; a key of another type gives crdt.ErrWrongType.
func (e *Engine) Get(ctx context.Context, key string) (string, bool, error) {
	raw, err := e.rdb.Get(ctx, key).Result()
	if errors.Is(err, redis.Nil) {
		return "", false, nil
	}
	if err != nil {
		return "", false, err
	}
	return decodeString(key, raw)
}

// decodeString turns the state record of a live string into its value.
func decodeString(key, raw string) (string, bool, error) {
	el, _, err := crdt.UnmarshalState(crdt.TypeString, []byte(raw))
	if err != nil {
		return "", false, fmt.Errorf("%w: key %q: %w", ErrCorruptState, key, err)
	}
	v, ok := el.StringValue()
	return v, ok, nil
}

// Position is a region's replication position: its own last sequence number
// and the applied vector of every origin.
type Position struct {
	Seq     uint64
	Applied crdt.Vector
}

// Position reads the region's sequence number and applied vector in one
// round trip.
func (e *Engine) Position(ctx context.Context) (Position, error) {
	pipe := e.meta.Pipeline()
	seq := pipe.HGet(ctx, keyMeta, "seq")
	app := pipe.HGetAll(ctx, keyApplied)
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return Position{}, err
	}
	p := Position{Applied: crdt.Vector{}}
	p.Seq, _ = seq.Uint64()
	for r, s := range app.Val() {
		var n uint64
		if _, err := fmt.Sscan(s, &n); err == nil {
			p.Applied[r] = n
		}
	}
	p.Applied[e.cfg.Region] = p.Seq
	return p, nil
}

// Lease grants the named lease to owner for ttl, or extends it if owner
// holds it already. Of several children serving one region, the holder of
// "shipper" ships the op log and the holder of "recv:<origin>" runs that
// channel.
func (e *Engine) Lease(ctx context.Context, name, owner string, ttl time.Duration) (bool, error) {
	v, err := e.fcall(ctx, "gr_lease", []any{name, owner, ttl.Milliseconds()})
	return v == int64(1), err
}

// LogLen returns the number of local ops waiting in the op log.
func (e *Engine) LogLen(ctx context.Context) (int64, error) { return e.meta.LLen(ctx, keyLog).Result() }

// ReadLog returns up to n ops from the head of the op log, oldest first.
func (e *Engine) ReadLog(ctx context.Context, n int64) ([][]byte, error) {
	vals, err := e.meta.LRange(ctx, keyLog, 0, n-1).Result()
	if err != nil {
		return nil, err
	}
	out := make([][]byte, len(vals))
	for i, v := range vals {
		out[i] = []byte(v)
	}
	return out, nil
}

// TrimLog removes the n oldest ops from the op log, after they were shipped.
func (e *Engine) TrimLog(ctx context.Context, n int64) error {
	return e.meta.LTrim(ctx, keyLog, n, -1).Err()
}
