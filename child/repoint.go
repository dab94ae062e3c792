package child

import (
	"context"
	"errors"
	"fmt"
	"net"

	"github.com/redis/go-redis/v9"
)

// conns are the engine's clients of one Redis server.
type conns struct {
	addr string
	rdb  *redis.Client // database 0
	meta *redis.Client // database 1
}

func (c *conns) close() error { return errors.Join(c.rdb.Close(), c.meta.Close()) }

// dial returns clients of the Redis at addr with the engine's options.
func (e *Engine) dial(addr string) *conns {
	dopt := e.opt
	dopt.Addr = addr
	mopt := dopt
	mopt.DB = metaDB
	return &conns{addr: addr, rdb: redis.NewClient(&dopt), meta: redis.NewClient(&mopt)}
}

// handle returns a client of database db that opens no connection of its
// own: a hook routes each of its commands and pipelines to the engine's
// current clients of that database.
func (e *Engine) handle(db int) *redis.Client {
	opt := e.opt
	opt.DB = db
	c := redis.NewClient(&opt)
	c.AddHook(route{e: e, db: db})
	return c
}

// route is the hook of the engine's handles (see handle).
type route struct {
	e  *Engine
	db int
}

var _ redis.Hook = route{}

func (r route) target() *redis.Client {
	c := r.e.cur.Load()
	if r.db == metaDB {
		return c.meta
	}
	return c.rdb
}

func (r route) DialHook(next redis.DialHook) redis.DialHook { return next }

func (r route) ProcessHook(redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error { return r.target().Process(ctx, cmd) }
}

func (r route) ProcessPipelineHook(redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		var p redis.Pipeliner
		if n := len(cmds); n >= 2 && cmds[0].Name() == "multi" && cmds[n-1].Name() == "exec" {
			// A transaction: the target wraps it in MULTI/EXEC again.
			p, cmds = r.target().TxPipeline(), cmds[1:n-1]
		} else {
			p = r.target().Pipeline()
		}
		_ = p.BatchProcess(ctx, cmds...)
		_, err := p.Exec(ctx)
		return err
	}
}

// Repoint moves the engine to the Redis at addr (after a failover of the
// region's master to its replica): it connects with the engine's options,
// loads the function library and then swaps the clients, so that every
// user of the engine (the lanes, the shipper, the receivers, reads through
// Redis()) reaches the new Redis from then on; the clients of the old one
// are closed, which fails the requests still in flight there. It does not
// make the new Redis ready for local writes: a promoted replica carries the
// old master's ready mark, which names another Redis process, so writes
// get TRYAGAIN until the region's guard has checked it against the
// region's stream and marked it (see MarkReady).
func (e *Engine) Repoint(ctx context.Context, addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("child: redis address %q: %w", addr, err)
	}
	e.repointMu.Lock()
	defer e.repointMu.Unlock()
	old := e.cur.Load()
	if old.addr == addr {
		return nil
	}
	next := e.dial(addr)
	if err := next.rdb.Ping(ctx).Err(); err != nil {
		_ = next.close()
		return fmt.Errorf("child: redis %s: %w", addr, err)
	}
	if err := loadLibrary(ctx, next.rdb); err != nil {
		_ = next.close()
		return err
	}
	e.cur.Store(next)
	e.log.Warn().Str("from", old.addr).Str("to", addr).Msg("the engine now uses another Redis")
	return old.close()
}
