package child

import (
	"context"
	_ "embed"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
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
	//go:embed lua/restore.lua
	luaRestore string
	//go:embed lua/register.lua
	luaRegister string

	library = "#!lua name=globalreplica\n" + luaLib + luaWrite + luaApply + luaRestore + luaGC + luaRegister
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
	// Lanes is how many ordered request streams the engine keeps to Redis
	// (see Submit). Default 2: Redis runs one command at a time, so two
	// pipelines in flight keep it busy, and fewer lanes make larger
	// pipelines and write groups (fewer round trips and FCALLs per request).
	Lanes int
	// MaxBatch caps the requests that go to Redis in one pipeline. Default 256.
	MaxBatch int
	// FastApplyMin is the smallest remote batch that takes the fast path
	// (child/fastapply.go). Default DefaultFastApplyMin.
	FastApplyMin int
}

func (c *EngineConfig) validate() error {
	if !crdt.ValidRegion(c.Region) {
		return fmt.Errorf("child: region %q: %w", c.Region, crdt.ErrBadRegion)
	}
	if c.Grace == 0 {
		c.Grace = DefaultGrace
	}
	if c.Lanes == 0 {
		c.Lanes = 2
	}
	if c.MaxBatch == 0 {
		c.MaxBatch = 256
	}
	if c.FastApplyMin == 0 {
		c.FastApplyMin = DefaultFastApplyMin
	}
	return nil
}

// Engine is the region's Redis engine. A local write is one script call
// that, atomically inside Redis, advances the HLC, takes the next sequence
// number, merges the op into the key's state and appends it to the op log.
// A remote batch is one call that merges the ops and raises the applied
// vector. Reads are commands on database 0, where user keys are stored as
// clients see them. Engine is safe for concurrent use.
type Engine struct {
	cfg EngineConfig
	// rdb (database 0) and meta (database 1) are stable handles: they open
	// no connection of their own but route every command and pipeline to
	// the clients of the Redis the engine currently uses (cur), so that
	// after Repoint every user of the engine, and every client obtained
	// from Redis(), reaches the new Redis.
	rdb       *redis.Client
	meta      *redis.Client
	cur       atomic.Pointer[conns]
	opt       redis.Options // options of the engine's clients; Addr is per conns
	repointMu sync.Mutex
	log       zerolog.Logger
	lanes     []chan reqGroup
	rr        atomic.Uint32 // round robin over lanes for Write
	stop      chan struct{}
	stopWG    sync.WaitGroup
	hook      atomic.Pointer[func()]

	infoExtra atomic.Pointer[func() []InfoField]

	// applyHook, when set (tests only), runs between the read of Apply's
	// fast path and its call to gr_apply, with the call's arguments.
	applyHook func(argv []any)
}

// OnWrite sets a function called after every call to Redis that wrote (the
// channel's shipper uses it to ship at once instead of at its next poll).
// It must not block.
func (e *Engine) OnWrite(f func()) { e.hook.Store(&f) }

// NewEngine returns an engine on the Redis that rdb points at (the engine
// opens its own connections with rdb's options) and loads the function
// library.
func NewEngine(ctx context.Context, cfg EngineConfig, rdb *redis.Client, log zerolog.Logger) (*Engine, error) {
	if rdb == nil {
		return nil, errors.New("child: nil redis client")
	}
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	// The engine's own clients: RESP2, so that replies passed through to
	// applications keep Redis's RESP2 shapes (flat arrays, scores as bulk
	// strings); database 0 for the user keyspace, 1 for the rest.
	dopt := *rdb.Options()
	dopt.DB, dopt.Protocol = 0, 2
	// No automatic retries: a write (INCRBY, an LTRIM of the op log) sent
	// twice after a timeout would be applied twice. Callers retry what is
	// safe to retry.
	dopt.MaxRetries = -1
	e := &Engine{cfg: cfg, opt: dopt, log: log, stop: make(chan struct{})}
	e.cur.Store(e.dial(dopt.Addr))
	e.rdb, e.meta = e.handle(0), e.handle(metaDB)
	if err := e.load(ctx); err != nil {
		_ = e.closeClients()
		return nil, err
	}
	for range cfg.Lanes {
		l := make(chan reqGroup, 4096)
		e.lanes = append(e.lanes, l)
		e.stopWG.Add(1)
		go e.runLane(l)
	}
	if err := e.meta.HSet(ctx, keyMeta, "grace", cfg.Grace.Milliseconds()).Err(); err != nil {
		_ = e.Close()
		return nil, fmt.Errorf("child: writing engine metadata: %w", err)
	}
	return e, nil
}

// Close stops the writers and releases the engine's own connections (not
// the client it was given). Writes must have returned before.
func (e *Engine) Close() error {
	close(e.stop)
	e.stopWG.Wait()
	return e.closeClients()
}

func (e *Engine) closeClients() error {
	return errors.Join(e.cur.Load().close(), e.rdb.Close(), e.meta.Close())
}

// Region returns the engine's region id.
func (e *Engine) Region() string { return e.cfg.Region }

// Redis returns the client of database 0, for reads. It follows Repoint:
// its commands always reach the Redis the engine uses at the time, but its
// Options keep the address the engine started with (see Addr).
func (e *Engine) Redis() *redis.Client { return e.rdb }

// Addr returns the address of the Redis the engine uses now.
func (e *Engine) Addr() string { return e.cur.Load().addr }

// Write runs one local write command: cmd is the engine's command name
// (set, incrby, hset, ...) and args its normalized arguments. The reply is
// the function's: int64, string, nil, []any, or an error carrying Redis's
// own error text. Concurrent writes go to Redis together (see Submit), each
// still its own atomic command and its own op.
func (e *Engine) Write(ctx context.Context, cmd string, args ...string) (any, error) {
	r := NewWrite(append([]string{cmd}, args...)...)
	e.Submit(int(e.rr.Add(1)), r)
	return r.Wait(ctx)
}

// WritePipeline runs several local write commands in one call to Redis,
// each its own atomic command and its own op, in order. Replies and errors
// are per command.
func (e *Engine) WritePipeline(ctx context.Context, cmds [][]string) ([]any, []error) {
	v, err := e.fcall(ctx, "gr_write", writeArgv(e.cfg.Region, cmds))
	return groupedReplies(v, err, len(cmds))
}

// load loads the function library into Redis, replacing an older one.
func (e *Engine) load(ctx context.Context) error { return loadLibrary(ctx, e.cur.Load().rdb) }

func loadLibrary(ctx context.Context, rdb *redis.Client) error {
	if err := rdb.FunctionLoadReplace(ctx, library).Err(); err != nil {
		return fmt.Errorf("child: loading the function library into redis (needs Redis 7 or later): %w", err)
	}
	return nil
}

// fcall calls a library function, loading the library again if Redis lost
// it (a restart without persistence, a FUNCTION FLUSH).
func (e *Engine) fcall(ctx context.Context, fn string, argv []any) (any, error) {
	rdb := e.cur.Load().rdb
	v, err := rdb.FCall(ctx, fn, nil, argv...).Result()
	if isNoFunction(err) {
		if err := e.load(ctx); err != nil {
			return nil, err
		}
		v, err = rdb.FCall(ctx, fn, nil, argv...).Result()
	}
	return v, err
}

func isNoFunction(err error) bool {
	return err != nil && strings.Contains(err.Error(), "Function not found")
}

// ApplyResult is what one remote batch did.
type ApplyResult struct {
	Applied   int            // ops applied (ops at or below the applied vector are skipped)
	Fast      int            // of those, ops the fast path applied (child/fastapply.go)
	LastSeq   uint64         // the origin's applied sequence number afterwards
	Conflicts map[string]int // conflicts resolved, by kind
}

// Apply merges a batch of encoded ops of one origin, in sequence order, and
// raises the origin's applied sequence in the same atomic step. Ops already
// applied are skipped; a batch that does not continue from the applied
// sequence fails with ErrGap and changes nothing.
func (e *Engine) Apply(ctx context.Context, origin string, ops [][]byte) (ApplyResult, error) {
	argv, err := e.applyArgs(ctx, origin, ops, nil)
	if err != nil {
		return ApplyResult{}, fmt.Errorf("child: applying ops of %s: %w", origin, err)
	}
	return e.applyCall(ctx, origin, argv)
}

// applyCall runs gr_apply with arguments built by applyArgs.
func (e *Engine) applyCall(ctx context.Context, origin string, argv []any) (ApplyResult, error) {
	if e.applyHook != nil {
		e.applyHook(argv)
	}
	v, err := e.fcall(ctx, "gr_apply", argv)
	if err != nil {
		if strings.HasPrefix(err.Error(), "GAP ") {
			return ApplyResult{}, fmt.Errorf("%w: %s", ErrGap, err.Error())
		}
		return ApplyResult{}, fmt.Errorf("child: applying ops of %s: %w", origin, err)
	}
	arr, ok := v.([]any)
	if !ok || len(arr) < 3 {
		return ApplyResult{}, fmt.Errorf("child: unexpected apply reply %v", v)
	}
	res := ApplyResult{Applied: int(toInt(arr[0])), LastSeq: uint64(toInt(arr[1])), Fast: int(toInt(arr[2]))}
	for i := 3; i+1 < len(arr); i += 2 {
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

// MGet returns the values of string keys; nil for a key that does not
// exist or is not a string, as MGET answers.
func (e *Engine) MGet(ctx context.Context, keys []string) ([]*string, error) {
	vals, err := e.rdb.MGet(ctx, keys...).Result()
	if err != nil {
		return nil, err
	}
	out := make([]*string, len(vals))
	for i, v := range vals {
		raw, ok := v.(string)
		if !ok {
			continue
		}
		s, live, err := decodeString(keys[i], raw)
		if err != nil {
			return nil, err
		}
		if live {
			out[i] = &s
		}
	}
	return out, nil
}

// decodeString turns the state record of a live string into its value:
// in place for a record without counter runs, else through the full
// decoder.
func decodeString(key, raw string) (string, bool, error) {
	if v, ok, fast := crdt.StringRecordValue(raw); fast {
		return v, ok, nil
	}
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

// ErrNotReady is the error local writes get while the region's Redis is
// not marked ready (see MarkReady).
var ErrNotReady = errors.New("TRYAGAIN this region is recovering its state (its Redis is new, was wiped or restored); retry shortly")

// Ready reports whether the region's Redis is marked ready for local
// writes. A Redis that lost its state (wiped, restarted without
// persistence, restored from a snapshot) is not.
func (e *Engine) Ready(ctx context.Context) (bool, error) {
	v, err := e.fcall(ctx, "gr_ready", []any{"check"})
	return v == int64(1), err
}

// MarkReady allows local writes on this Redis process: call it once the
// region's sequence number is known to be past every op the region ever
// issued (after channel.RestoreFromStream, or at once for a region that
// replicates nowhere). The mark names the Redis process (its run id), so a
// restart, a restore from a snapshot or a promoted replica needs it again.
//
// While a rebuild holds the Redis (BeginRebuild until EndRebuild) it fails
// with ErrRebuilding and leaves the Redis refusing writes: the mark and the
// rebuild's are decided in Redis, one after the other, so a readiness check
// that began before the rebuild cannot reopen writes in its middle.
func (e *Engine) MarkReady(ctx context.Context) error {
	if err := e.meta.HSet(ctx, keyMeta, "grace", e.cfg.Grace.Milliseconds()).Err(); err != nil {
		return err
	}
	v, err := e.fcall(ctx, "gr_ready", []any{"mark"})
	if err == nil && v == int64(-1) {
		return ErrRebuilding
	}
	return err
}

// ErrRebuilding is MarkReady's error while a rebuild holds the Redis.
var ErrRebuilding = errors.New("child: a rebuild holds this region's Redis; it allows writes again when it ends")

// Restore raises the region's sequence number to at least last (and its
// HLC to lastTS) and merges ops of the region's own stream that this Redis
// does not have: the repair after a failover to a replica that lagged or a
// restore from an old snapshot (brief, invariant 1). The ops are not logged
// again. It returns the sequence number afterwards.
func (e *Engine) Restore(ctx context.Context, last uint64, lastTS crdt.Timestamp, ops [][]byte) (uint64, error) {
	argv := make([]any, 0, len(ops)+4)
	argv = append(argv, e.cfg.Region, last, lastTS.Ms, lastTS.Lc)
	for _, op := range ops {
		argv = append(argv, op)
	}
	v, err := e.fcall(ctx, "gr_restore", argv)
	if err != nil {
		return 0, fmt.Errorf("child: restore of %s: %w", e.cfg.Region, err)
	}
	arr, ok := v.([]any)
	if !ok || len(arr) != 2 {
		return 0, fmt.Errorf("child: unexpected restore reply %v", v)
	}
	return uint64(toInt(arr[1])), nil
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

// TrimLog removes the ops up to sequence upTo from the head of the op log,
// once the stream acknowledged them, and returns how many it removed. It
// trims by sequence, so ops the log received after a wipe or a failover,
// not yet shipped, stay even if they took the places of shipped ones.
func (e *Engine) TrimLog(ctx context.Context, upTo uint64) (int64, error) {
	v, err := e.fcall(ctx, "gr_trim", []any{upTo})
	return toInt(v), err
}
