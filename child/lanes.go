package child

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// Request is one command for the engine to run in Redis: a local write (an
// engine command) or a read of database 0. Build it with NewWrite or
// NewRead, hand it to Submit and collect the result with Wait.
type Request struct {
	write []string // engine command and arguments
	read  []any    // raw command on database 0
	reply any
	err   error
	done  chan struct{}
}

// NewWrite returns a request for a local write: the engine's command name
// (set, incrby, hset, ...) and its normalized arguments.
func NewWrite(args ...string) *Request {
	return &Request{write: args, done: make(chan struct{})}
}

// NewRead returns a request for a read command on database 0, answered by
// Redis as it stands (the child decodes string values itself).
func NewRead(args ...any) *Request {
	return &Request{read: args, done: make(chan struct{})}
}

// Wait returns the request's reply once it ran: nil for a nil reply, the
// Redis error for an error reply. If ctx ends first it returns ctx's error;
// the request may still run.
func (r *Request) Wait(ctx context.Context) (any, error) {
	select {
	case <-r.done:
		return r.reply, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// Submit queues a request on one of the engine's lanes (lane modulo their
// number). A lane is an ordered stream to Redis: its requests run in the
// order they were submitted, and everything queued while the lane's
// previous pipeline was in flight goes to Redis in one pipeline, with
// consecutive writes in one function call. Clients that pipeline, and many
// clients at once, thus cost Redis few round trips and few calls. A client
// connection submits all its requests to one lane, so it reads its own
// writes in order.
func (e *Engine) Submit(lane int, r *Request) {
	if lane < 0 {
		lane = -lane
	}
	select {
	case e.lanes[lane%len(e.lanes)] <- r:
	case <-e.stop:
		r.err = errors.New("child: engine closed")
		close(r.done)
	}
}

// Lanes returns the number of lanes.
func (e *Engine) Lanes() int { return len(e.lanes) }

func (e *Engine) runLane(q chan *Request) {
	defer e.stopWG.Done()
	batch := make([]*Request, 0, e.cfg.MaxBatch)
	for {
		batch = batch[:0]
		select {
		case <-e.stop:
			return
		case r := <-q:
			batch = append(batch, r)
		}
	fill:
		for len(batch) < e.cfg.MaxBatch {
			select {
			case r := <-q:
				batch = append(batch, r)
			default:
				break fill
			}
		}
		wrote := e.runBatch(batch)
		for _, r := range batch {
			close(r.done)
		}
		if f := e.hook.Load(); f != nil && wrote {
			(*f)()
		}
	}
}

// runBatch runs requests in order in one pipeline and reports whether any
// write was among them.
func (e *Engine) runBatch(batch []*Request) bool {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	type group struct {
		reqs []*Request
		cmd  *redis.Cmd
	}
	var groups []group
	rdb := e.cur.Load().rdb // the Redis in use now (see Repoint)
	pipe := rdb.Pipeline()
	wrote := false
	for i := 0; i < len(batch); {
		if batch[i].read != nil {
			groups = append(groups, group{reqs: batch[i : i+1], cmd: pipe.Do(ctx, batch[i].read...)})
			i++
			continue
		}
		j := i
		var cmds [][]string
		for ; j < len(batch) && batch[j].read == nil; j++ {
			cmds = append(cmds, batch[j].write)
		}
		groups = append(groups, group{reqs: batch[i:j], cmd: pipe.FCall(ctx, "gr_write", nil, writeArgv(e.cfg.Region, cmds)...)})
		wrote = true
		i = j
	}
	_, _ = pipe.Exec(ctx)
	for _, g := range groups {
		v, err := g.cmd.Result()
		if isNoFunction(err) {
			// Redis lost the library (restart without persistence, FUNCTION
			// FLUSH): these writes did nothing; load it and run them again.
			if lerr := e.load(ctx); lerr != nil {
				err = lerr
			} else {
				cmds := make([][]string, len(g.reqs))
				for i, r := range g.reqs {
					cmds[i] = r.write
				}
				v, err = e.fcall(ctx, "gr_write", writeArgv(e.cfg.Region, cmds))
			}
		}
		if g.reqs[0].read != nil {
			setResult(g.reqs[0], v, err)
			continue
		}
		replies, errs := groupedReplies(v, err, len(g.reqs))
		for i, r := range g.reqs {
			r.reply, r.err = replies[i], errs[i]
		}
	}
	return wrote
}

func setResult(r *Request, v any, err error) {
	if errors.Is(err, redis.Nil) {
		v, err = nil, nil
	}
	r.reply, r.err = v, err
}

// groupedReplies splits the reply of a grouped gr_write call into the
// replies and errors of its n commands.
func groupedReplies(v any, err error, n int) ([]any, []error) {
	replies, errs := make([]any, n), make([]error, n)
	arr, ok := v.([]any)
	if err == nil && (!ok || len(arr) != n) {
		err = fmt.Errorf("child: unexpected reply to a grouped write: %T", v)
	}
	for i := range n {
		switch {
		case err != nil:
			errs[i] = err
		default:
			if rerr, isErr := arr[i].(error); isErr {
				errs[i] = rerr
			} else {
				replies[i] = arr[i]
			}
		}
	}
	return replies, errs
}

// writeArgv builds the arguments of a grouped gr_write call:
// region * n argc1 cmd1 args1... (see write.lua).
func writeArgv(region string, cmds [][]string) []any {
	n := 3
	for _, c := range cmds {
		n += len(c) + 1
	}
	argv := make([]any, 0, n)
	argv = append(argv, region, "*", len(cmds))
	for _, c := range cmds {
		argv = append(argv, len(c))
		for _, a := range c {
			argv = append(argv, a)
		}
	}
	return argv
}
