package child

import (
	"context"
	"fmt"
	"strconv"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/internal/testredis"
)

// A connection's pipelined commands go to its lane as groups (one per
// pipelined read, at most MaxBatch requests each, cut short by a command
// that does not defer). Reads after writes of the same connection see them,
// in every position of a pipeline, with several connections at once.
func TestPipelineGroupsReadYourWrites(t *testing.T) {
	ctx := context.Background()
	// Small groups, several lanes: a pipelined read is split into many
	// groups, which must still run in order on the connection's lane.
	e, err := NewEngine(ctx, EngineConfig{Instance: "test", Region: "sgp", Lanes: 4, MaxBatch: 8}, testredis.Start(t).Client(), zerolog.Nop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = e.Close() })
	if err := e.MarkReady(ctx); err != nil {
		t.Fatal(err)
	}
	c := serve(t, e)

	const conns, steps = 4, 500
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	for n := range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			key := fmt.Sprintf("rw:%d", n)
			pipe := c.Pipeline()
			incrs := make([]*redis.IntCmd, steps)
			gets := make([]*redis.StringCmd, steps)
			for i := range steps {
				incrs[i] = pipe.Incr(ctx, key)
				gets[i] = pipe.Get(ctx, key)
				if n == 0 && i%50 == 0 {
					pipe.Ping(ctx) // not deferred: the replies before it are finished first
				}
				pipe.Set(ctx, key+":s", i, 0)
			}
			mget := pipe.MGet(ctx, key, key+":s")
			if _, err := pipe.Exec(ctx); err != nil {
				errs <- err
				return
			}
			for i := range steps {
				want := int64(i + 1)
				if incrs[i].Val() != want {
					errs <- fmt.Errorf("%s: INCR %d = %d, want %d", key, i, incrs[i].Val(), want)
					return
				}
				if got, err := gets[i].Int64(); err != nil || got != want {
					errs <- fmt.Errorf("%s: GET after INCR %d = %v (%w), want %d", key, i, gets[i].Val(), err, want)
					return
				}
			}
			want := []any{strconv.Itoa(steps), strconv.Itoa(steps - 1)}
			if got := mget.Val(); fmt.Sprint(got) != fmt.Sprint(want) {
				errs <- fmt.Errorf("%s: MGET = %v, want %v", key, got, want)
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// A request waited for before it was submitted says so instead of
// blocking.
func TestRequestWaitUnsubmitted(t *testing.T) {
	if _, err := NewRead("GET", "k").Wait(context.Background()); err == nil {
		t.Fatal("Wait of an unsubmitted request returned no error")
	}
}
