// Package daemon runs one region's child process: the engine on the
// region's Redis, the RESP endpoint for applications, the shipper and the
// receivers of the region's channels, and an HTTP endpoint with Prometheus
// metrics, channel status and controls. cmd/child and the playground are
// thin wrappers around it.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"sort"
	"sync"
	"time"

	"github.com/google/uuid"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/channel"
	"github.com/globalreplica/globalreplica/child"
	"github.com/globalreplica/globalreplica/crdt"
)

// NATS says how to reach a region's NATS (a URL or a comma-separated list
// of a cluster's URLs) and with which credentials.
type NATS struct {
	URL       string
	User      string
	Password  string
	Token     string
	CredsFile string
	// PingInterval is how often the connection pings its server; after
	// MaxPingsOut unanswered pings it counts as dead and reconnects. Zero
	// means DefaultPingInterval.
	PingInterval time.Duration
}

// DefaultPingInterval is the ping interval of a child's NATS connections:
// a WAN link that goes silent without closing (a peer cut off, its address
// moved) is noticed within about MaxPingsOut+1 intervals (30 s) instead of
// the minutes of nats.go's default (2 minutes per ping), and the channel
// reconnects and resumes from its applied vector.
const DefaultPingInterval = 10 * time.Second

// MaxPingsOut is how many pings may go unanswered before a connection
// counts as dead.
const MaxPingsOut = 2

func (n NATS) connect(name string, log zerolog.Logger) (*nats.Conn, error) {
	return nats.Connect(n.URL, append(n.options(name, log), nats.RetryOnFailedConnect(true))...)
}

// connectOnce connects like connect but fails at once when the server
// cannot be reached (for a one-off request, such as a rebuild's export).
func (n NATS) connectOnce(name string, log zerolog.Logger) (*nats.Conn, error) {
	return nats.Connect(n.URL, append(n.options(name, log), nats.Timeout(5*time.Second))...)
}

// options are the connection options of every NATS connection of a child:
// ping every PingInterval, reconnect forever, log disconnections, the
// configured credentials.
func (n NATS) options(name string, log zerolog.Logger) []nats.Option {
	ping := n.PingInterval
	if ping <= 0 {
		ping = DefaultPingInterval
	}
	opts := []nats.Option{
		nats.Name(name),
		nats.PingInterval(ping),
		nats.MaxPingsOutstanding(MaxPingsOut),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(250 * time.Millisecond),
		nats.DisconnectErrHandler(func(_ *nats.Conn, err error) {
			if err != nil { // nil: closed on purpose
				log.Warn().Err(err).Str("nats", n.URL).Msg("NATS disconnected")
			}
		}),
		nats.ReconnectHandler(func(c *nats.Conn) {
			log.Info().Str("nats", c.ConnectedUrl()).Msg("NATS reconnected")
		}),
	}
	switch {
	case n.CredsFile != "":
		opts = append(opts, nats.UserCredentials(n.CredsFile))
	case n.Token != "":
		opts = append(opts, nats.Token(n.Token))
	case n.User != "":
		opts = append(opts, nats.UserInfo(n.User, n.Password))
	}
	return opts
}

// Peer is another region of the global instance.
type Peer struct {
	Region string
	NATS   NATS
}

// Config configures a region's child process.
type Config struct {
	Instance      string
	Region        string
	Listen        string // RESP endpoint, default 127.0.0.1:6380
	Password      string // clients' AUTH password
	MaxValueBytes int
	Redis         redis.Options // the region's Redis
	NATS          NATS          // the region's own NATS (its stream lives there)
	Peers         []Peer
	HTTP          string // metrics and control endpoint; "" disables it
	Retention     time.Duration
	StreamBytes   int64
	Owner         string // lease owner id; default host-pid-uuid
	Log           zerolog.Logger
	Manager       ManagerConfig // the channel manager's config store (manager.go); excludes Peers
}

func (c *Config) validate() error {
	if !crdt.ValidRegion(c.Instance) {
		return fmt.Errorf("daemon: instance name %q: 1-32 characters of a-z, 0-9 and '-', starting with a letter", c.Instance)
	}
	if !crdt.ValidRegion(c.Region) {
		return fmt.Errorf("daemon: region %q: %w", c.Region, crdt.ErrBadRegion)
	}
	seen := map[string]bool{c.Region: true}
	for _, p := range c.Peers {
		if !crdt.ValidRegion(p.Region) {
			return fmt.Errorf("daemon: peer region %q: %w", p.Region, crdt.ErrBadRegion)
		}
		if seen[p.Region] {
			return fmt.Errorf("daemon: region %q listed twice (a region cannot be its own peer)", p.Region)
		}
		seen[p.Region] = true
		if p.NATS.URL == "" {
			return fmt.Errorf("daemon: peer %s has no NATS URL", p.Region)
		}
	}
	if c.NATS.URL == "" && len(c.Peers) > 0 {
		return errors.New("daemon: peers need the region's own NATS URL (its stream lives there)")
	}
	if err := c.Manager.validate(c); err != nil {
		return err
	}
	if c.Listen == "" {
		c.Listen = "127.0.0.1:6380"
	}
	if c.Owner == "" {
		host, _ := os.Hostname()
		c.Owner = fmt.Sprintf("%s-%d-%s", host, os.Getpid(), uuid.NewString()[:8])
	}
	return nil
}

// Daemon is a running region child. Build it with Start.
type Daemon struct {
	cfg      Config
	Engine   *child.Engine
	Server   *child.Server
	Node     *channel.Node // nil when no NATS is configured (a standalone child)
	registry *prometheus.Registry
	http     *http.Server
	httpLn   net.Listener
	conns    []*nats.Conn
	ownJS    jetstream.JetStream // the region's own JetStream, nil without NATS
	rdb      *redis.Client
	mgr      *managed // nil without a channel manager
	// readyMu serializes ensureReady with the failover's repoint, so a
	// Redis is never marked ready unless it was checked (failover.go).
	readyMu sync.Mutex
}

// Start connects to the region's Redis and NATS and its peers' NATS, binds
// the RESP and HTTP listeners, and returns the daemon ready to Run. NATS
// connections retry in the background, so a peer that is down at start
// does not stop the region from serving.
func Start(ctx context.Context, cfg Config) (*Daemon, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	log := cfg.Log.With().Str("instance", cfg.Instance).Str("region", cfg.Region).Logger()
	d := &Daemon{cfg: cfg, registry: prometheus.NewRegistry()}
	ok := false
	defer func() {
		if !ok {
			d.close()
		}
	}()
	d.registry.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	d.rdb = redis.NewClient(&cfg.Redis)
	eng, err := child.NewEngine(ctx, child.EngineConfig{Instance: cfg.Instance, Region: cfg.Region}, d.rdb, log)
	if err != nil {
		return nil, err
	}
	d.Engine = eng
	srv, err := child.NewServer(child.Config{Addr: cfg.Listen, Password: cfg.Password, MaxValueBytes: cfg.MaxValueBytes}, eng, log)
	if err != nil {
		return nil, err
	}
	if err := srv.Listen(); err != nil {
		return nil, err
	}
	d.Server = srv
	if cfg.NATS.URL == "" {
		log.Warn().Msg("no NATS configured: this child serves its region alone, nothing is replicated")
	} else if err := d.startChannels(cfg, log); err != nil {
		return nil, err
	}
	if cfg.Manager.NATS.URL != "" {
		if err := d.startManager(cfg, log); err != nil {
			return nil, err
		}
	}
	if cfg.HTTP != "" {
		ln, err := net.Listen("tcp", cfg.HTTP)
		if err != nil {
			return nil, fmt.Errorf("daemon: HTTP listen on %s: %w", cfg.HTTP, err)
		}
		d.httpLn = ln
		d.http = &http.Server{Handler: d.routes(), ReadHeaderTimeout: 5 * time.Second}
	}
	ok = true
	return d, nil
}

// startChannels connects to the region's NATS and its peers' and builds
// the shipper and receivers.
func (d *Daemon) startChannels(cfg Config, log zerolog.Logger) error {
	own, err := cfg.NATS.connect("gr-"+cfg.Instance+"-"+cfg.Region, log)
	if err != nil {
		return fmt.Errorf("daemon: NATS of %s: %w", cfg.Region, err)
	}
	d.conns = append(d.conns, own)
	if err := d.startControl(own, log); err != nil {
		return err
	}
	js, err := jetstream.New(own)
	if err != nil {
		return err
	}
	d.ownJS = js
	metrics := channel.NewMetrics(d.registry)
	node, err := channel.NewNode(channel.NodeConfig{
		Stream: channel.StreamConfig{Instance: cfg.Instance, Region: cfg.Region, Retention: cfg.Retention, MaxBytes: cfg.StreamBytes},
		Owner:  cfg.Owner,
	}, d.Engine, js, metrics, log)
	if err != nil {
		return err
	}
	d.Node = node
	d.Engine.OnWrite(node.Shipper().Notify)
	d.Engine.InfoExtra(func() []child.InfoField {
		var out []child.InfoField
		for _, st := range node.Status() {
			out = append(out, child.InfoField{Key: "channel_" + st.Origin, Value: fmt.Sprintf(
				"state=%s,applied_seq=%d,lag_ops=%d,lag_seconds=%.3f,apply_rate=%.0f", st.State, st.AppliedSeq, st.LagOps, st.LagSeconds, st.ApplyRate)})
		}
		return out
	})
	for _, p := range cfg.Peers {
		nc, err := p.NATS.connect("gr-"+cfg.Instance+"-"+cfg.Region+"-from-"+p.Region, log)
		if err != nil {
			return fmt.Errorf("daemon: NATS of peer %s: %w", p.Region, err)
		}
		d.conns = append(d.conns, nc)
		pjs, err := jetstream.New(nc)
		if err != nil {
			return err
		}
		if err := node.AddPeer(p.Region, pjs); err != nil {
			return err
		}
	}
	return nil
}

// RESPAddr returns the bound RESP address.
func (d *Daemon) RESPAddr() string { return d.Server.Addr().String() }

// HTTPAddr returns the bound HTTP address, or "".
func (d *Daemon) HTTPAddr() string {
	if d.httpLn == nil {
		return ""
	}
	return d.httpLn.Addr().String()
}

// Run serves until ctx ends, then shuts everything down.
func (d *Daemon) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	run := func(name string, f func() error) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := f(); err != nil && !errors.Is(err, http.ErrServerClosed) && !errors.Is(err, child.ErrServerClosed) {
				errs <- fmt.Errorf("%s: %w", name, err)
			}
		}()
	}
	if err := d.ensureReady(ctx); err != nil {
		d.cfg.Log.Error().Err(err).Str("region", d.cfg.Region).Msg("this region's Redis could not be checked against its stream; local writes are refused until it is")
	}
	run("guard", func() error { d.guard(ctx); return nil })
	run("resp", func() error { return d.Server.Run(ctx) })
	if d.Node != nil {
		run("channels", func() error { return d.Node.Run(ctx) })
	}
	if d.mgr != nil {
		run("manager", func() error { return d.mgr.run(ctx) })
	}
	if d.http != nil {
		run("http", func() error { return d.http.Serve(d.httpLn) })
		go func() {
			<-ctx.Done()
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			_ = d.http.Shutdown(sctx)
		}()
	}
	wg.Wait()
	d.close()
	close(errs)
	var all []error
	for err := range errs {
		all = append(all, err)
	}
	return errors.Join(all...)
}

// ensureReady makes the region's Redis ready for local writes: if it is not
// (new, wiped, restarted from a snapshot, a promoted replica), the region's
// sequence is raised past its stream and its own missed ops are merged back
// first (channel.RestoreFromStream), so no OpID is ever issued twice.
func (d *Daemon) ensureReady(ctx context.Context) error {
	d.readyMu.Lock()
	defer d.readyMu.Unlock()
	return d.ensureReadyLocked(ctx)
}

// ensureReadyLocked is ensureReady with readyMu held.
func (d *Daemon) ensureReadyLocked(ctx context.Context) error {
	ready, err := d.Engine.Ready(ctx)
	if err != nil || ready {
		return err
	}
	// A failed-away master is never made writable again (failover.go).
	if d.mgr != nil {
		if err := d.mgr.fo.mayServe(d.Engine.Addr()); err != nil {
			return err
		}
	}
	// A rebuild refuses writes until it has copied and merged (rebuild.go).
	if mark, err := d.Engine.RebuildMark(ctx); err != nil || mark != "" {
		return err
	}
	if d.ownJS != nil {
		n, err := channel.RestoreFromStream(ctx, d.ownJS, d.Engine, d.cfg.Instance, d.cfg.Region)
		if err != nil {
			return err
		}
		if n > 0 {
			d.cfg.Log.Warn().Str("region", d.cfg.Region).Int("ops", n).Msg("this region's Redis had lost its own ops; merged them back from its stream")
		}
	}
	return d.Engine.MarkReady(ctx)
}

// guard checks every second that the region's Redis is still the one that
// was made ready (a restart, a wipe or a failover makes it not), and makes
// it ready again.
func (d *Daemon) guard(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if err := d.ensureReady(ctx); err != nil && ctx.Err() == nil {
				d.cfg.Log.Warn().Err(err).Str("region", d.cfg.Region).Msg("region not ready for local writes")
			}
		}
	}
}

func (d *Daemon) close() {
	for _, c := range d.conns {
		c.Close()
	}
	if d.Engine != nil {
		_ = d.Engine.Close()
	}
	if d.rdb != nil {
		_ = d.rdb.Close()
	}
	if d.httpLn != nil && d.http == nil {
		_ = d.httpLn.Close()
	}
}

// Statuses returns the status of the region's inbound channels.
func (d *Daemon) Statuses() []channel.Status {
	if d.Node == nil {
		return nil
	}
	st := d.Node.Status()
	sort.Slice(st, func(i, j int) bool { return st[i].Origin < st[j].Origin })
	return st
}
