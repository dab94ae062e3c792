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
// NewRead, hand it to Submit and collect the result with Wait (after Submit
// returned: Submit sets up what Wait waits for).
type Request struct {
	write []any // engine command and arguments (strings or []byte)
	read  []any // raw command on database 0
	reply any
	err   error
	done  chan struct{} // closed once the request ran; shared by a group
}

// NewWrite returns a request for a local write: the engine's command name
// (set, incrby, hset, ...) and its normalized arguments.
func NewWrite(args ...string) *Request {
	w := make([]any, len(args))
	for i, a := range args {
		w[i] = a
	}
	return &Request{write: w}
}

// newWrite is NewWrite for arguments already boxed: the command name and
// the arguments as strings or []byte (the handlers pass the client's
// argument bytes as they are, without a copy to a string).
func newWrite(args ...any) *Request { return &Request{write: args} }

// NewRead returns a request for a read command on database 0, answered by
// Redis as it stands (the child decodes string values itself).
func NewRead(args ...any) *Request {
	return &Request{read: args}
}

// Wait returns the request's reply once it ran: nil for a nil reply, the
// Redis error for an error reply. If ctx ends first it returns ctx's error;
// the request may still run.
func (r *Request) Wait(ctx context.Context) (any, error) {
	if r.done == nil {
		return nil, errNotSubmitted
	}
	select {
	case <-r.done:
		return r.reply, r.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

var (
	errNotSubmitted = errors.New("child: request not submitted")
	errEngineClosed = errors.New("child: engine closed")
)

// reqGroup is what a lane receives: requests of one submitter, in order,
// that all complete together (done is closed once all of them ran). A
// client connection submits the requests of one pipelined read as one
// group: one channel send and one wake-up for all of them.
type reqGroup struct {
	reqs []*Request
	done chan struct{}
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
	e.submitGroup(lane, []*Request{r})
}

// submitGroup queues requests on a lane as one group, in order; they
// complete together. reqs must not be changed afterwards.
func (e *Engine) submitGroup(lane int, reqs []*Request) {
	if len(reqs) == 0 {
		return
	}
	done := make(chan struct{})
	for _, r := range reqs {
		r.done = done
	}
	if lane < 0 {
		lane = -lane
	}
	select {
	case e.lanes[lane%len(e.lanes)] <- reqGroup{reqs: reqs, done: done}:
	case <-e.stop:
		for _, r := range reqs {
			r.err = errEngineClosed
		}
		close(done)
	}
}

// Lanes returns the number of lanes.
func (e *Engine) Lanes() int { return len(e.lanes) }

func (e *Engine) runLane(q chan reqGroup) {
	defer e.stopWG.Done()
	batch := make([]*Request, 0, e.cfg.MaxBatch)
	var dones []chan struct{}
	for {
		batch, dones = batch[:0], dones[:0]
		select {
		case <-e.stop:
			return
		case g := <-q:
			batch = append(batch, g.reqs...)
			dones = append(dones, g.done)
		}
	fill:
		for len(batch) < e.cfg.MaxBatch {
			select {
			case g := <-q:
				batch = append(batch, g.reqs...)
				dones = append(dones, g.done)
			default:
				break fill
			}
		}
		wrote := e.runBatch(batch)
		clear(batch) // keep no request alive until the next batch
		for i, d := range dones {
			close(d)
			dones[i] = nil
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
	groups := make([]group, 0, len(batch))
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
		for j < len(batch) && batch[j].read == nil {
			j++
		}
		groups = append(groups, group{reqs: batch[i:j], cmd: pipe.FCall(ctx, "gr_write", nil, groupArgv(e.cfg.Region, batch[i:j])...)})
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
				v, err = e.fcall(ctx, "gr_write", groupArgv(e.cfg.Region, g.reqs))
			}
		}
		if g.reqs[0].read != nil {
			setResult(g.reqs[0], v, err)
			continue
		}
		setGroupedReplies(g.reqs, v, err)
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
	splitGrouped(v, err, n, func(i int, reply any, err error) { replies[i], errs[i] = reply, err })
	return replies, errs
}

// setGroupedReplies sets the results of the requests of a grouped
// gr_write call from its reply.
func setGroupedReplies(reqs []*Request, v any, err error) {
	splitGrouped(v, err, len(reqs), func(i int, reply any, err error) { reqs[i].reply, reqs[i].err = reply, err })
}

// splitGrouped calls set with the reply or error of each of the n commands
// of a grouped gr_write call.
func splitGrouped(v any, err error, n int, set func(i int, reply any, err error)) {
	arr, ok := v.([]any)
	if err == nil && (!ok || len(arr) != n) {
		err = fmt.Errorf("child: unexpected reply to a grouped write: %T", v)
	}
	for i := range n {
		switch {
		case err != nil:
			set(i, nil, err)
		default:
			if rerr, isErr := arr[i].(error); isErr {
				set(i, nil, rerr)
			} else {
				set(i, arr[i], nil)
			}
		}
	}
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

// groupArgv is writeArgv for the write requests of a lane's batch.
func groupArgv(region string, reqs []*Request) []any {
	n := 3
	for _, r := range reqs {
		n += len(r.write) + 1
	}
	argv := make([]any, 0, n)
	argv = append(argv, region, "*", len(reqs))
	for _, r := range reqs {
		argv = append(argv, len(r.write))
		argv = append(argv, r.write...)
	}
	return argv
}
