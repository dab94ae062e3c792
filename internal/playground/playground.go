// Package playground runs a whole global instance on one machine: several
// regions, each with its own Redis, its own embedded NATS server with
// JetStream and its child, all channels between them, and the channel
// manager: its config store on an embedded NATS server of its own and its
// control loop. It is what `go tool task demo` starts.
package playground

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sync"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/redis/go-redis/v9"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/internal/daemon"
	"github.com/globalreplica/globalreplica/internal/devredis"
	"github.com/globalreplica/globalreplica/internal/embednats"
	"github.com/globalreplica/globalreplica/internal/redisproc"
	"github.com/globalreplica/globalreplica/manager"
)

// RegionNames are the region ids the playground hands out, in order.
var RegionNames = []string{"sgp", "fra", "iad", "syd", "gru", "nrt", "lhr", "bom", "yul", "jnb"}

// Config of a playground.
type Config struct {
	Instance string // default "demo"
	Regions  int    // default 3
	PortBase int    // region i's endpoint listens on PortBase+i; default 7000
	DataDir  string // default: a temporary folder removed at the end
	// EmbeddedRedis uses the embedded development-only Redis (devredis)
	// even when redis-server is installed; without redis-server on PATH
	// the playground uses it anyway.
	EmbeddedRedis bool
	Log           zerolog.Logger
}

// Region is one running region of the playground.
type Region struct {
	Name   string
	Addr   string // the child's RESP endpoint
	HTTP   string // metrics and channel controls
	NATS   string // the region's NATS URL
	Daemon *daemon.Daemon
}

// Playground is a running global instance.
type Playground struct {
	Regions []*Region
	// Manager is the URL of the NATS that holds the channel manager's config
	// store (`channel-manager --nats <url>`).
	Manager string
	// DevRedis is set when the regions run on the embedded development-only
	// Redis instead of redis-server.
	DevRedis bool
	instance string
	store    *manager.Store
	log      zerolog.Logger
	stop     []func()
}

// Start starts every region and returns once all serve.
func Start(ctx context.Context, cfg Config) (p *Playground, err error) {
	if cfg.Instance == "" {
		cfg.Instance = "demo"
	}
	if cfg.Regions == 0 {
		cfg.Regions = 3
	}
	if cfg.Regions < 1 || cfg.Regions > len(RegionNames) {
		return nil, fmt.Errorf("playground: --regions must be between 1 and %d", len(RegionNames))
	}
	if cfg.PortBase == 0 {
		cfg.PortBase = 7000
	}
	if cfg.PortBase < 1024 || cfg.PortBase+cfg.Regions > 65535 {
		return nil, fmt.Errorf("playground: --port-base %d leaves no room for %d regions", cfg.PortBase, cfg.Regions)
	}
	p = &Playground{DevRedis: cfg.EmbeddedRedis || !redisproc.Installed(), instance: cfg.Instance, log: cfg.Log}
	defer func() {
		if err != nil {
			p.Close()
		}
	}()
	dir := cfg.DataDir
	if dir == "" {
		if dir, err = os.MkdirTemp("", "globalreplica-demo-"); err != nil {
			return nil, err
		}
		p.stop = append(p.stop, func() { _ = os.RemoveAll(dir) })
	}
	regions := make([]infra, cfg.Regions)
	for i := range regions {
		name := RegionNames[i]
		for _, sub := range []string{"redis", "nats"} {
			if err := os.MkdirAll(filepath.Join(dir, name, sub), 0o755); err != nil {
				return nil, err
			}
		}
		var raddr string
		if p.DevRedis {
			dr, err := devredis.Start("127.0.0.1:0")
			if err != nil {
				return nil, err
			}
			p.stop = append(p.stop, func() { _ = dr.Close() })
			raddr = dr.Addr()
		} else {
			rp, err := redisproc.Start(ctx, redisproc.Options{Dir: filepath.Join(dir, name, "redis"), AppendOnly: true})
			if err != nil {
				return nil, err
			}
			p.stop = append(p.stop, rp.Stop)
			raddr = rp.Addr()
		}
		ns, err := embednats.Start(embednats.Options{Name: cfg.Instance + "-" + name, StoreDir: filepath.Join(dir, name, "nats")})
		if err != nil {
			return nil, err
		}
		p.stop = append(p.stop, func() { ns.Shutdown(); ns.WaitForShutdown() })
		regions[i] = infra{redis: raddr, nats: ns}
	}
	if err := p.startManager(ctx, cfg, dir, regions); err != nil {
		return nil, err
	}
	for i, in := range regions {
		name := RegionNames[i]
		d, err := daemon.Start(ctx, daemon.Config{
			Instance: cfg.Instance,
			Region:   name,
			Listen:   fmt.Sprintf("127.0.0.1:%d", cfg.PortBase+i),
			Redis:    redis.Options{Addr: in.redis},
			NATS:     daemon.NATS{URL: in.nats.ClientURL()},
			Manager:  daemon.ManagerConfig{NATS: daemon.NATS{URL: p.Manager}},
			HTTP:     "127.0.0.1:0",
			Log:      cfg.Log,
		})
		if err != nil {
			return nil, fmt.Errorf("playground: region %s: %w", name, err)
		}
		p.Regions = append(p.Regions, &Region{Name: name, Addr: d.RESPAddr(), HTTP: d.HTTPAddr(), NATS: in.nats.ClientURL(), Daemon: d})
	}
	return p, nil
}

// infra is what one region runs besides its child.
type infra struct {
	redis string // address
	nats  *server.Server
}

// startManager starts the NATS server of the manager's config store and
// declares the instance, its regions and (by adding them) every channel
// both ways. With --data pointing at an earlier playground the instance is
// there already: the regions' addresses are updated.
func (p *Playground) startManager(ctx context.Context, cfg Config, dir string, regions []infra) error {
	if err := os.MkdirAll(filepath.Join(dir, "manager"), 0o755); err != nil {
		return err
	}
	ns, err := embednats.Start(embednats.Options{Name: cfg.Instance + "-manager", StoreDir: filepath.Join(dir, "manager")})
	if err != nil {
		return err
	}
	p.stop = append(p.stop, func() { ns.Shutdown(); ns.WaitForShutdown() })
	p.Manager = ns.ClientURL()
	nc, err := nats.Connect(p.Manager, nats.Name("gr-playground-manager"))
	if err != nil {
		return err
	}
	p.stop = append(p.stop, nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		return err
	}
	if p.store, err = manager.Open(ctx, js, cfg.Instance, manager.WithLogger(cfg.Log)); err != nil {
		return err
	}
	if _, err := p.store.CreateInstance(ctx, manager.Instance{}); err != nil && !errors.Is(err, manager.ErrInstanceExists) {
		return err
	}
	for i, in := range regions {
		r := manager.Region{ID: RegionNames[i], NATS: in.nats.ClientURL(), Redis: in.redis}
		_, _, err := p.store.AddRegion(ctx, r)
		if errors.Is(err, manager.ErrRegionExists) {
			_, err = p.store.UpdateRegion(ctx, r.ID, func(old *manager.Region) error {
				old.NATS, old.Redis = r.NATS, r.Redis
				return nil
			})
		}
		if err != nil {
			return fmt.Errorf("playground: region %s: %w", r.ID, err)
		}
	}
	return nil
}

// Describe writes what a newcomer needs: one line per region,
// "region <id> redis://127.0.0.1:<port>", the line
// "manager nats://127.0.0.1:<port>" of the channel manager's config store,
// then comment lines with each region's HTTP endpoint and NATS URL.
func (p *Playground) Describe(w io.Writer) {
	if p.DevRedis {
		_, _ = fmt.Fprintln(w, "# "+devredis.Notice)
		_, _ = fmt.Fprintln(w, "# (no redis-server on PATH, or --embedded-redis; install Debian's redis-server for the real thing)")
	}
	for _, r := range p.Regions {
		_, _ = fmt.Fprintf(w, "region %s redis://%s\n", r.Name, r.Addr)
	}
	_, _ = fmt.Fprintf(w, "manager %s\n", p.Manager)
	_, _ = fmt.Fprintf(w, "# try: go run ./cmd/channel-manager --nats %s --instance %s channel status\n", p.Manager, p.instance)
	for _, r := range p.Regions {
		_, _ = fmt.Fprintf(w, "# %s: metrics and channels at http://%s/metrics and /channels, NATS %s\n", r.Name, r.HTTP, r.NATS)
	}
}

// Run serves until ctx ends and then stops everything.
func (p *Playground) Run(ctx context.Context) error {
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		p.controlLoop(ctx)
	}()
	errs := make([]error, len(p.Regions))
	for i, r := range p.Regions {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = r.Daemon.Run(ctx)
		}()
	}
	wg.Wait()
	p.Close()
	return errors.Join(errs...)
}

// controlLoop is the channel manager's control loop, as `channel-manager
// run` runs it (the playground's regions have no replicas, so its
// automatic failover only watches).
func (p *Playground) controlLoop(ctx context.Context) {
	_ = p.store.ControlLoop(ctx, manager.LoopConfig{
		AutoFailover: true,
		OnError: func(what string, err error) {
			p.log.Warn().Err(err).Msg("manager: " + what + " round failed")
		},
	})
}

// Close stops the infrastructure (Redis, NATS) in reverse order.
func (p *Playground) Close() {
	for i := len(p.stop) - 1; i >= 0; i-- {
		p.stop[i]()
	}
	p.stop = nil
}
