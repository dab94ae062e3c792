package regional

import (
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/globalreplica/globalreplica/crdt"
)

// Defaults of Config.
const (
	DefaultProbeInterval    = time.Second
	DefaultProbeTimeout     = time.Second
	DefaultFailureThreshold = 3
	DefaultHoldTime         = 30 * time.Second
)

// Errors of the package. Configuration errors wrap ErrConfig.
var (
	// ErrConfig: the Config is not usable (New fails with it).
	ErrConfig = errors.New("regional: bad config")
	// ErrNoRegion: no region meets the conditions. New fails with it when
	// none does at start; commands fail with it at once while none does,
	// rather than waiting for a region that is down.
	ErrNoRegion = errors.New("regional: no region is available")
	// ErrWrongRegion: an availability endpoint serves another region than
	// the one configured at its address (a mix-up in the region list).
	ErrWrongRegion = errors.New("regional: the endpoint serves another region")
)

// Region is one region's child, as an application reaches it.
type Region struct {
	// Name is the region id ("sgp"), as the child reports it.
	Name string
	// Addr is the child's RESP address, host:port.
	Addr string
	// HTTP is the child's HTTP endpoint (its --http flag): host:port or
	// http(s)://host:port. The client probes GET <HTTP>/availability.
	// Empty: the region is probed with PING only, and no lag condition can
	// be checked (MaxLag and MaxLagOps then refuse to start).
	HTTP string
}

// Config configures a Client. Zero values take the Default* constants.
type Config struct {
	// Regions in order of preference, the application's own region first.
	Regions []Region
	// Options are the go-redis options every region's connections use
	// (password, DB, TLS, timeouts, pool sizes). Addr must be empty: each
	// region has its own. nil: go-redis defaults except MaxRetries -1 and
	// DialerRetries 1. Short timeouts (DialTimeout,
	// ReadTimeout of a second or less) and few dial retries (DialerRetries
	// 1) make a failing region fail commands quickly until the client has
	// moved away from it. Keep MaxRetries -1 when the application sends
	// writes that are not idempotent (INCRBY, HINCRBY, APPEND): go-redis
	// retries a command whose connection broke after it was sent, which
	// can apply it twice.
	Options *redis.Options
	// MaxLag: a region is available only while every inbound channel's
	// oldest unapplied op is younger than this. 0: not checked.
	MaxLag time.Duration
	// MaxLagOps: a region is available only while no inbound channel has
	// more than this many unapplied ops. 0: not checked (there is no way to
	// ask for "no lag at all": ops are always in flight under load).
	MaxLagOps int64
	// StrictLag: a channel whose lag cannot be measured (its origin is
	// unreachable from the region) counts as lagging. Off by default:
	// otherwise one region going away makes every other one unavailable.
	StrictLag bool
	// FailureThreshold: consecutive failures (failed probes, and commands
	// on the active region that fail with a network error) after which a
	// region counts as down. A successful probe resets the count.
	FailureThreshold int
	// ProbeInterval: how often every region is probed.
	ProbeInterval time.Duration
	// ProbeTimeout bounds one probe (availability request and PING).
	ProbeTimeout time.Duration
	// HoldTime: a more preferred region must have passed every probe for
	// this long before the client fails back to it. At least ProbeInterval.
	HoldTime time.Duration
	// OnEvent, if set, is called for every change: a region down or up,
	// a failover, a fail-back, no region left. It is called from the
	// client's monitor goroutine, in order, and must return quickly (log,
	// count); it must not call Close.
	OnEvent func(Event)
	// HTTPClient for the probes (TLS to the endpoints, proxies). nil: a
	// client of its own. Probe deadlines come from ProbeTimeout.
	HTTPClient *http.Client
}

// validate checks the config and fills in defaults.
func (c *Config) validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("%w: "+format, append([]any{ErrConfig}, args...)...)
	}
	if len(c.Regions) == 0 {
		return bad("no regions: give at least one, in order of preference (own region first)")
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{{"MaxLag", c.MaxLag}, {"ProbeInterval", c.ProbeInterval}, {"ProbeTimeout", c.ProbeTimeout}, {"HoldTime", c.HoldTime}} {
		if d.v < 0 {
			return bad("%s must not be negative (got %s)", d.name, d.v)
		}
	}
	if c.MaxLagOps < 0 {
		return bad("MaxLagOps must not be negative (got %d)", c.MaxLagOps)
	}
	if c.FailureThreshold < 0 {
		return bad("FailureThreshold must not be negative (got %d)", c.FailureThreshold)
	}
	if c.ProbeInterval == 0 {
		c.ProbeInterval = DefaultProbeInterval
	}
	if c.ProbeTimeout == 0 {
		c.ProbeTimeout = DefaultProbeTimeout
	}
	if c.FailureThreshold == 0 {
		c.FailureThreshold = DefaultFailureThreshold
	}
	if c.HoldTime == 0 {
		c.HoldTime = max(DefaultHoldTime, c.ProbeInterval)
	}
	if c.HoldTime < c.ProbeInterval {
		return bad("HoldTime %s is shorter than ProbeInterval %s: a recovered region could not be seen healthy for the hold time", c.HoldTime, c.ProbeInterval)
	}
	if c.Options != nil && c.Options.Addr != "" {
		return bad("Options.Addr %q is set: give each region's address in Regions instead", c.Options.Addr)
	}
	lagChecked := c.MaxLag > 0 || c.MaxLagOps > 0
	if c.StrictLag && !lagChecked {
		return bad("StrictLag needs MaxLag or MaxLagOps: without a tolerance no lag is checked")
	}
	names := map[string]bool{}
	addrs := map[string]string{}
	for i, r := range c.Regions {
		if !crdt.ValidRegion(r.Name) {
			return bad("region %d: name %q: 1-32 characters of a-z, 0-9 and '-', starting with a letter", i+1, r.Name)
		}
		if names[r.Name] {
			return bad("region %s is listed twice", r.Name)
		}
		names[r.Name] = true
		if err := checkHostPort(r.Addr); err != nil {
			return bad("region %s: Addr %q: %v", r.Name, r.Addr, err)
		}
		if other, ok := addrs[r.Addr]; ok {
			return bad("regions %s and %s have the same Addr %s", other, r.Name, r.Addr)
		}
		addrs[r.Addr] = r.Name
		if r.HTTP == "" {
			if lagChecked {
				return bad("region %s has no HTTP endpoint, so its lag cannot be checked (MaxLag and MaxLagOps need one per region)", r.Name)
			}
			continue
		}
		if _, err := availabilityURL(r.HTTP, *c); err != nil {
			return bad("region %s: HTTP %q: %v", r.Name, r.HTTP, err)
		}
	}
	return nil
}

// checkHostPort checks a host:port address.
func checkHostPort(addr string) error {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return errors.New("not host:port")
	}
	if host == "" {
		return errors.New("no host")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 1 || n > 65535 {
		return fmt.Errorf("port %q is not a number from 1 to 65535", port)
	}
	return nil
}

// availabilityURL returns the probe URL of an HTTP endpoint.
func availabilityURL(endpoint string, c Config) (string, error) {
	raw := endpoint
	if !strings.Contains(raw, "://") {
		raw = "http://" + raw
	}
	u, err := url.Parse(raw)
	if err != nil {
		return "", errors.New("not a URL or host:port")
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return "", fmt.Errorf("scheme %q: use http or https", u.Scheme)
	}
	if err := checkHostPort(u.Host); err != nil {
		return "", err
	}
	if u.Path != "" && u.Path != "/" || u.RawQuery != "" || u.Fragment != "" {
		return "", errors.New("give the endpoint only (scheme, host and port): the client adds /availability")
	}
	u.Path = "/availability"
	q := url.Values{}
	if c.MaxLag > 0 {
		q.Set("max_lag", c.MaxLag.String())
	}
	if c.MaxLagOps > 0 {
		q.Set("max_lag_ops", strconv.FormatInt(c.MaxLagOps, 10))
	}
	if c.StrictLag {
		q.Set("strict", "true")
	}
	u.RawQuery = q.Encode()
	return u.String(), nil
}
