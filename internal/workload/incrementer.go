package workload

import (
	"context"
	"strings"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"
)

// Incrementer increments one counter through a region's endpoint until
// Halt, through failovers and rebuilds, and sorts the replies: acknowledged
// increments, refused ones (TRYAGAIN, READONLY: not applied) and ambiguous
// ones (the connection lost mid-request: maybe applied). A test then knows
// the counter's final value lies in [acked, acked+ambiguous].
type Incrementer struct {
	stop chan struct{}
	done chan struct{}

	mu                        sync.Mutex
	acked, refused, ambiguous int
}

// Tally is what an Incrementer counted.
type Tally struct{ Acked, Refused, Ambiguous int }

// StartIncrementer runs INCRBY key 1 on c every pause until Halt.
func StartIncrementer(c *redis.Client, key string, pause time.Duration) *Incrementer {
	w := &Incrementer{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(w.done)
		for {
			select {
			case <-w.stop:
				return
			default:
			}
			err := c.IncrBy(context.Background(), key, 1).Err()
			w.mu.Lock()
			switch {
			case err == nil:
				w.acked++
			case strings.HasPrefix(err.Error(), "TRYAGAIN"), strings.HasPrefix(err.Error(), "READONLY"):
				w.refused++
			default:
				w.ambiguous++
			}
			w.mu.Unlock()
			time.Sleep(pause)
		}
	}()
	return w
}

// Halt stops the writes and returns the tally.
func (w *Incrementer) Halt() Tally {
	close(w.stop)
	<-w.done
	w.mu.Lock()
	defer w.mu.Unlock()
	return Tally{Acked: w.acked, Refused: w.refused, Ambiguous: w.ambiguous}
}
