package regional

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// Client is a go-redis client that sends every command to the preferred
// available region. It embeds a *redis.Client, so it has the whole go-redis
// command API and satisfies redis.UniversalClient and redis.Cmdable: pass
// it wherever a go-redis client is expected. Commands and pipelines are
// routed, each as a whole, to the active region; connections the
// application holds itself (Conn, Subscribe, Watch) go to the region that
// was active when they were opened. Hooks added with AddHook run on every
// region's connections.
type Client struct {
	*redis.Client // the facade: its commands are routed by routeHook

	cfg     Config
	regions []*region
	http    *http.Client
	ownHTTP bool
	active  atomic.Pointer[region]
	poke    chan struct{}
	cancel  context.CancelFunc
	done    chan struct{}
	close   sync.Once
	closed  error

	mu      sync.Mutex // guards the health fields of regions and pending
	pending []Event
}

var _ redis.UniversalClient = (*Client)(nil)

// region is one region with its own go-redis client and its health.
type region struct {
	Region
	idx      int
	rdb      *redis.Client
	probeURL string // "" without an HTTP endpoint

	// guarded by Client.mu
	healthy bool
	fails   int       // consecutive failures
	since   time.Time // start of the current run of successful probes; zero after a failure
	lastErr string
}

// RegionStatus is one region's health as the client sees it.
type RegionStatus struct {
	Name                string
	Active              bool
	Healthy             bool
	ConsecutiveFailures int
	// HealthySince: start of the current run of successful probes (zero
	// after a failure).
	HealthySince time.Time
	LastError    string
}

// New probes every region once (bounded by ctx and Config.ProbeTimeout),
// starts on the most preferred one that meets the conditions and keeps
// probing in the background until Close. It fails with an error wrapping
// ErrConfig for a bad config, ErrWrongRegion when an endpoint serves
// another region than configured, and ErrNoRegion when no region is
// available.
func New(ctx context.Context, cfg Config) (*Client, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	c := &Client{cfg: cfg, http: cfg.HTTPClient, poke: make(chan struct{}, 1), done: make(chan struct{})}
	if c.http == nil {
		c.http = &http.Client{Transport: http.DefaultTransport.(*http.Transport).Clone()}
		c.ownHTTP = true
	}
	// Without options: no command retries (a write retried after its
	// connection broke may apply twice) and one dial attempt per connection.
	base := redis.Options{MaxRetries: -1, DialerRetries: 1}
	if cfg.Options != nil {
		base = *cfg.Options
	}
	for i, r := range cfg.Regions {
		o := base
		o.Addr = r.Addr
		reg := &region{Region: r, idx: i, rdb: redis.NewClient(&o)}
		if r.HTTP != "" {
			reg.probeURL, _ = availabilityURL(r.HTTP, cfg) // checked by validate
		}
		c.regions = append(c.regions, reg)
	}
	fo := base
	fo.Addr = "regional"
	fo.TLSConfig = nil  // the region's dialer does TLS
	fo.MinIdleConns = 0 // the facade dials only for Conn, Subscribe and Watch
	fo.Dialer = func(ctx context.Context, network, _ string) (net.Conn, error) {
		r, err := c.route()
		if err != nil {
			return nil, err
		}
		return r.rdb.Options().Dialer(ctx, network, r.Addr)
	}
	c.Client = redis.NewClient(&fo)
	c.Client.AddHook(routeHook{c})

	errs := c.probeAll(ctx, true)
	for _, err := range errs {
		if errors.Is(err, ErrWrongRegion) {
			_ = c.closeClients()
			return nil, err
		}
	}
	c.mu.Lock()
	c.reselect(time.Now())
	c.mu.Unlock()
	if c.active.Load() == nil {
		err := c.noRegion()
		_ = c.closeClients()
		return nil, err
	}
	c.flush()
	mctx, cancel := context.WithCancel(context.Background())
	c.cancel = cancel
	go c.monitor(mctx)
	return c, nil
}

// Active returns the name of the region commands go to, or "" while no
// region is available.
func (c *Client) Active() string {
	if r := c.active.Load(); r != nil {
		return r.Name
	}
	return ""
}

// Status returns every region's health, in order of preference.
func (c *Client) Status() []RegionStatus {
	act := c.active.Load()
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make([]RegionStatus, len(c.regions))
	for i, r := range c.regions {
		out[i] = RegionStatus{Name: r.Name, Active: r == act, Healthy: r.healthy, ConsecutiveFailures: r.fails, HealthySince: r.since, LastError: r.lastErr}
	}
	return out
}

// RegionClient returns the go-redis client of one region (to read what a
// given region holds, say), or false for a name not configured. It is
// closed by Close.
func (c *Client) RegionClient(name string) (*redis.Client, bool) {
	for _, r := range c.regions {
		if r.Name == name {
			return r.rdb, true
		}
	}
	return nil, false
}

// AddHook adds a go-redis hook to every region's client, so that it sees
// each command once, on the connection of the region that served it.
func (c *Client) AddHook(h redis.Hook) {
	for _, r := range c.regions {
		r.rdb.AddHook(h)
	}
}

// Close stops the probes and closes every connection. Commands after Close
// fail with redis.ErrClosed.
func (c *Client) Close() error {
	c.close.Do(func() {
		c.cancel()
		<-c.done
		c.closed = c.closeClients()
	})
	return c.closed
}

func (c *Client) closeClients() error {
	errs := []error{c.Client.Close()}
	for _, r := range c.regions {
		errs = append(errs, r.rdb.Close())
	}
	if c.ownHTTP {
		c.http.CloseIdleConnections()
	}
	return errors.Join(errs...)
}

// route returns the active region, or an error wrapping ErrNoRegion.
func (c *Client) route() (*region, error) {
	if r := c.active.Load(); r != nil {
		return r, nil
	}
	return nil, c.noRegion()
}

// noRegion returns ErrNoRegion with every region's last error.
func (c *Client) noRegion() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	var why []string
	for _, r := range c.regions {
		why = append(why, r.Name+": "+r.lastErr)
	}
	return fmt.Errorf("%w (%s)", ErrNoRegion, strings.Join(why, "; "))
}

// monitor probes every region each ProbeInterval and moves the client
// when the conditions say so, until ctx ends.
func (c *Client) monitor(ctx context.Context) {
	defer close(c.done)
	t := time.NewTicker(c.cfg.ProbeInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			c.probeAll(ctx, false)
		case <-c.poke:
		}
		if ctx.Err() != nil {
			return
		}
		c.mu.Lock()
		c.reselect(time.Now())
		c.mu.Unlock()
		c.flush()
	}
}

// probeAll probes every region concurrently and records the results. At
// start (initial) a region that fails is down at once, and no region-up
// events are sent.
func (c *Client) probeAll(ctx context.Context, initial bool) []error {
	errs := make([]error, len(c.regions))
	var wg sync.WaitGroup
	for i, r := range c.regions {
		wg.Go(func() { errs[i] = c.probe(ctx, r) })
	}
	wg.Wait()
	if ctx.Err() != nil && !initial {
		return errs // closing: the failures say nothing about the regions
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	for i, r := range c.regions {
		c.record(r, errs[i], now, initial)
	}
	return errs
}

// record notes a probe's result; c.mu is held.
func (c *Client) record(r *region, err error, now time.Time, initial bool) {
	if err == nil {
		r.fails, r.lastErr = 0, ""
		if r.since.IsZero() {
			r.since = now
		}
		if !r.healthy {
			r.healthy = true
			if !initial {
				c.emit(Event{Kind: RegionUp, Region: r.Name, Reason: "probe passed", At: now})
			}
		}
		return
	}
	c.failure(r, err.Error(), now, initial)
}

// failure counts a failure of r; c.mu is held. It reports whether r went
// down.
func (c *Client) failure(r *region, why string, now time.Time, initial bool) bool {
	r.fails++
	r.since = time.Time{}
	r.lastErr = why
	switch {
	case r.healthy && r.fails >= c.cfg.FailureThreshold:
		r.healthy = false
		c.emit(Event{Kind: RegionDown, Region: r.Name, Reason: fmt.Sprintf("%d consecutive failures, last: %s", r.fails, why), At: now})
		return true
	case initial:
		c.emit(Event{Kind: RegionDown, Region: r.Name, Reason: why, At: now})
	}
	return false
}

// commandFailed counts a command that failed with a network error on r.
func (c *Client) commandFailed(r *region, err error) {
	c.mu.Lock()
	down := c.failure(r, "command: "+err.Error(), time.Now(), false)
	c.mu.Unlock()
	if down {
		select {
		case c.poke <- struct{}{}:
		default:
		}
	}
}

// reselect moves the client to the region the conditions choose; c.mu is
// held. Away from an unhealthy region it moves at once to the most
// preferred healthy one; back to a more preferred region only once that
// one has passed every probe for HoldTime.
func (c *Client) reselect(now time.Time) {
	cur := c.active.Load()
	var first *region
	for _, r := range c.regions {
		if r.healthy {
			first = r
			break
		}
	}
	switch {
	case first == nil:
		if cur != nil {
			c.active.Store(nil)
			c.emit(Event{Kind: NoRegion, From: cur.Name, Reason: "no region meets the conditions; commands fail with " + ErrNoRegion.Error(), At: now})
		}
	case cur == nil:
		c.active.Store(first)
		if c.cancel != nil { // not at start
			c.emit(Event{Kind: Failover, To: first.Name, Reason: first.Name + " is available again", At: now})
		}
	case first == cur:
	case !cur.healthy:
		c.active.Store(first)
		kind := Failover
		if first.idx < cur.idx {
			kind = Failback
		}
		c.emit(Event{Kind: kind, From: cur.Name, To: first.Name, Reason: cur.Name + " is unavailable: " + cur.lastErr, At: now})
	default: // cur is healthy and a more preferred region is too
		for _, r := range c.regions[:cur.idx] {
			if r.healthy && !r.since.IsZero() && now.Sub(r.since) >= c.cfg.HoldTime {
				c.active.Store(r)
				c.emit(Event{Kind: Failback, From: cur.Name, To: r.Name, Reason: fmt.Sprintf("%s has been available for %s (hold time %s)", r.Name, now.Sub(r.since).Round(time.Millisecond), c.cfg.HoldTime), At: now})
				break
			}
		}
	}
}

// emit queues an event; c.mu is held.
func (c *Client) emit(e Event) { c.pending = append(c.pending, e) }

// flush delivers the queued events to OnEvent, outside c.mu.
func (c *Client) flush() {
	c.mu.Lock()
	evs := c.pending
	c.pending = nil
	c.mu.Unlock()
	if c.cfg.OnEvent == nil {
		return
	}
	for _, e := range evs {
		c.cfg.OnEvent(e)
	}
}

// probe checks one region: its availability endpoint (when it has one) and
// a PING on its RESP endpoint.
func (c *Client) probe(ctx context.Context, r *region) error {
	ctx, cancel := context.WithTimeout(ctx, c.cfg.ProbeTimeout)
	defer cancel()
	if r.probeURL != "" {
		if err := c.probeHTTP(ctx, r); err != nil {
			return err
		}
	}
	if err := r.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("PING %s: %w", r.Addr, err)
	}
	return nil
}

// routeHook sends the facade's commands and pipelines to the active
// region's client. It never calls next: the facade has no connections of
// its own for commands.
type routeHook struct{ c *Client }

func (h routeHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h routeHook) ProcessHook(redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		r, err := h.c.route()
		if err != nil {
			cmd.SetErr(err)
			return err
		}
		err = r.rdb.Process(ctx, cmd)
		h.c.observe(ctx, r, err)
		return err
	}
}

func (h routeHook) ProcessPipelineHook(redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		r, err := h.c.route()
		if err != nil {
			for _, cmd := range cmds {
				cmd.SetErr(err)
			}
			return err
		}
		var pipe redis.Pipeliner
		if n := len(cmds); n >= 2 && cmds[0].Name() == "multi" && cmds[n-1].Name() == "exec" {
			// A TxPipeline: the facade wrapped the commands in MULTI/EXEC;
			// the region's TxPipeline wraps them again.
			pipe, cmds = r.rdb.TxPipeline(), cmds[1:n-1]
		} else {
			pipe = r.rdb.Pipeline()
		}
		_ = pipe.BatchProcess(ctx, cmds...)
		_, err = pipe.Exec(ctx)
		h.c.observe(ctx, r, err)
		return err
	}
}

// observe counts a command's network error against its region. Replies
// (errors included) and the caller's own cancellation say nothing about
// the region's health.
func (c *Client) observe(ctx context.Context, r *region, err error) {
	if err == nil || ctx.Err() != nil || errors.Is(err, redis.ErrClosed) {
		return
	}
	var reply redis.Error
	if errors.As(err, &reply) { // includes redis.Nil
		return
	}
	c.commandFailed(r, err)
}
