package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rs/zerolog"
	"github.com/spf13/pflag"
	"gopkg.in/yaml.v3"

	"github.com/globalreplica/globalreplica/child"
	"github.com/globalreplica/globalreplica/crdt"
	"github.com/globalreplica/globalreplica/internal/daemon"
)

// config is the daemon's configuration, resolved from flags, environment,
// an optional config file and defaults, in that order of precedence.
type config struct {
	Instance      string
	Region        string
	Listen        string
	Redis         string
	RedisPassword string
	Password      string
	MaxValueBytes int
	LogLevel      zerolog.Level
	NATS          daemon.NATS   // this region's NATS, where its stream lives
	Peers         []daemon.Peer // the other regions and their NATS
	Manager       string        // NATS URL of the channel manager's config store; excludes Peers
	GCEvery       time.Duration // least time between two tombstone collections (with Manager)
	HTTP          string
	Retention     time.Duration
	StreamBytes   int64
}

// Defaults of the daemon.
const (
	defaultListen   = child.DefaultAddr
	defaultRedis    = "127.0.0.1:6379"
	defaultLogLevel = "info"
)

// errUsage marks configuration errors: exit code 2.
var errUsage = errors.New("usage")

// setting is one configuration key: its flag, environment variable and
// config-file key, and how a value is parsed into the config.
type setting struct {
	name  string // flag and config-file key
	env   string
	def   string
	usage string
	set   func(c *config, v string) error
}

var settings = []setting{
	{name: "instance", env: "GR_INSTANCE", usage: "global instance name (required): 1-32 characters of a-z, 0-9 and '-', starting with a letter",
		set: func(c *config, v string) error { c.Instance = v; return nil }},
	{name: "region", env: "GR_REGION", usage: "this region's id (required): 1-32 characters of a-z, 0-9 and '-', starting with a letter",
		set: func(c *config, v string) error { c.Region = v; return nil }},
	{name: "listen", env: "GR_LISTEN", def: defaultListen, usage: "address the RESP endpoint listens on, for applications",
		set: func(c *config, v string) error { c.Listen = v; return nil }},
	{name: "redis", env: "GR_REDIS_ADDR", def: defaultRedis, usage: "address of this region's redis-server, where the child keeps its data",
		set: func(c *config, v string) error { c.Redis = v; return nil }},
	{name: "redis-password", env: "GR_REDIS_PASSWORD", usage: "password of the redis-server (its requirepass); prefer the environment or the config file to a flag, which ps shows",
		set: func(c *config, v string) error { c.RedisPassword = v; return nil }},
	{name: "password", env: "GR_PASSWORD", usage: "password clients must give with AUTH (user \"default\"); empty: no authentication; prefer the environment or the config file",
		set: func(c *config, v string) error { c.Password = v; return nil }},
	{name: "max-value-bytes", env: "GR_MAX_VALUE_BYTES", def: formatSize(child.DefaultMaxValueBytes),
		usage: "largest argument accepted, in bytes or with a unit (512kb, 64mb, 1gb); larger ones are refused with an error",
		set: func(c *config, v string) error {
			n, err := parseSize(v)
			if err != nil {
				return err
			}
			c.MaxValueBytes = n
			return nil
		}},
	{name: "nats", env: "GR_NATS_URL", usage: "URL of this region's NATS with JetStream (several URLs of a cluster separated by commas); empty: no replication, the child serves its region alone",
		set: func(c *config, v string) error { c.NATS.URL = v; return nil }},
	{name: "nats-user", env: "GR_NATS_USER", usage: "user for NATS (this region's and the peers' unless their URLs carry their own user:password@)",
		set: func(c *config, v string) error { c.NATS.User = v; return nil }},
	{name: "nats-password", env: "GR_NATS_PASSWORD", usage: "password for NATS; prefer the environment or the config file",
		set: func(c *config, v string) error { c.NATS.Password = v; return nil }},
	{name: "nats-token", env: "GR_NATS_TOKEN", usage: "token for NATS instead of user and password",
		set: func(c *config, v string) error { c.NATS.Token = v; return nil }},
	{name: "nats-creds", env: "GR_NATS_CREDS", usage: "NATS credentials file (JWT and NKey) instead of user, password or token",
		set: func(c *config, v string) error { c.NATS.CredsFile = v; return nil }},
	{name: "peers", env: "GR_PEERS", usage: "the other regions: region=nats-url pairs separated by commas or spaces (fra=nats://fra.example:4222,iad=nats://u:p@iad.example:4222)",
		set: func(c *config, v string) error {
			peers, err := parsePeers(v)
			c.Peers = peers
			return err
		}},
	{name: "manager-nats", env: "GR_MANAGER_NATS", usage: "NATS URL of the channel manager's config store (with the NATS credentials above): the channels come from its desired state and the child publishes heartbeats there; excludes --peers",
		set: func(c *config, v string) error { c.Manager = v; return nil }},
	{name: "gc-every", env: "GR_GC_EVERY", def: "1m", usage: "with --manager-nats: least time between two tombstone collections, each a paced scan of the keyspace that holds Redis at most a fifth of the time (docs/storage.md)",
		set: func(c *config, v string) error { return positiveDuration(&c.GCEvery, "gc-every", v, "1m") }},
	{name: "http", env: "GR_HTTP", def: "127.0.0.1:9121", usage: "address of the HTTP endpoint: /metrics (Prometheus), /livez, /readyz, /availability?max_lag=100ms, /channels and channel controls (docs/operations.md); empty: none",
		set: func(c *config, v string) error { c.HTTP = v; return nil }},
	{name: "retention", env: "GR_RETENTION", def: "168h", usage: "how long this region's stream keeps ops: how long another region may be away and still resume without a rebuild",
		set: func(c *config, v string) error { return positiveDuration(&c.Retention, "retention", v, "168h") }},
	{name: "stream-max-bytes", env: "GR_STREAM_MAX_BYTES", def: "0", usage: "size limit of this region's stream (bytes or with a unit); 0: no limit. Ops dropped for size before a region applied them make it need a rebuild",
		set: func(c *config, v string) error {
			if v == "0" {
				c.StreamBytes = 0
				return nil
			}
			n, err := parseSize(v)
			c.StreamBytes = int64(n)
			return err
		}},
	{name: "log-level", env: "GR_LOG_LEVEL", def: defaultLogLevel, usage: "log level: trace, debug, info, warn, error or disabled",
		set: func(c *config, v string) error {
			l, err := zerolog.ParseLevel(strings.ToLower(v))
			if err != nil || v == "" {
				return fmt.Errorf("unknown log level %q", v)
			}
			c.LogLevel = l
			return nil
		}},
}

// positiveDuration parses v, a positive duration, into d; name and example
// make the error.
func positiveDuration(d *time.Duration, name, v, example string) error {
	x, err := time.ParseDuration(v)
	if err != nil || x <= 0 {
		return fmt.Errorf("%s %q: a positive duration like %s", name, v, example)
	}
	*d = x
	return nil
}

// parsePeers reads "fra=nats://...,iad=nats://..." into peers.
func parsePeers(v string) ([]daemon.Peer, error) {
	var peers []daemon.Peer
	for _, item := range strings.FieldsFunc(v, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' }) {
		region, url, ok := strings.Cut(item, "=")
		if !ok || url == "" {
			return nil, fmt.Errorf("peer %q: want region=nats-url", item)
		}
		if !crdt.ValidRegion(region) {
			return nil, fmt.Errorf("peer %q: %w", region, crdt.ErrBadRegion)
		}
		peers = append(peers, daemon.Peer{Region: region, NATS: daemon.NATS{URL: url}})
	}
	return peers, nil
}

// configFileFlag names the config file setting, which is resolved first.
const (
	configFileFlag = "config"
	configFileEnv  = "GR_CONFIG"
)

// addFlags declares the flags of every setting on fs.
func addFlags(fs *pflag.FlagSet) {
	for _, s := range settings {
		usage := s.usage + " [$" + s.env + "]"
		fs.String(s.name, s.def, usage)
	}
	fs.String(configFileFlag, "", "optional config file (.json, .yaml or .yml) with the same keys as the flags [$"+configFileEnv+"]")
}

// resolveConfig builds the config: defaults, then the config file, then
// the environment, then the flags that were set.
func resolveConfig(fs *pflag.FlagSet, getenv func(string) string) (config, error) {
	var c config
	values := map[string]string{}
	sources := map[string]string{}
	for _, s := range settings {
		values[s.name] = s.def
		sources[s.name] = "default"
	}

	path := getenv(configFileEnv)
	if f := fs.Lookup(configFileFlag); f != nil && f.Changed {
		path = f.Value.String()
	}
	if path != "" {
		file, err := readConfigFile(path)
		if err != nil {
			return c, fmt.Errorf("%w: %w", errUsage, err)
		}
		for k, v := range file {
			values[k] = v
			sources[k] = "config file " + path
		}
	}
	for _, s := range settings {
		if v := getenv(s.env); v != "" {
			values[s.name] = v
			sources[s.name] = "$" + s.env
		}
		if f := fs.Lookup(s.name); f != nil && f.Changed {
			values[s.name] = f.Value.String()
			sources[s.name] = "--" + s.name
		}
	}
	for _, s := range settings {
		if err := s.set(&c, values[s.name]); err != nil {
			return c, fmt.Errorf("%w: %s (from %s): %w", errUsage, s.name, sources[s.name], err)
		}
	}
	return c, c.validate()
}

func (c *config) validate() error {
	switch {
	case c.Instance == "":
		return fmt.Errorf("%w: the instance name is required: --instance or $GR_INSTANCE", errUsage)
	case !crdt.ValidRegion(c.Instance):
		return fmt.Errorf("%w: invalid instance name %q: 1-32 characters of a-z, 0-9 and '-', starting with a letter", errUsage, c.Instance)
	case c.Region == "":
		return fmt.Errorf("%w: the region is required: --region or $GR_REGION", errUsage)
	case !crdt.ValidRegion(c.Region):
		return fmt.Errorf("%w: invalid region %q: %w", errUsage, c.Region, crdt.ErrBadRegion)
	case c.Listen == "":
		return fmt.Errorf("%w: --listen is empty", errUsage)
	case c.Redis == "":
		return fmt.Errorf("%w: --redis is empty", errUsage)
	case c.MaxValueBytes <= 0:
		return fmt.Errorf("%w: --max-value-bytes must be positive", errUsage)
	case len(c.Peers) > 0 && c.NATS.URL == "":
		return fmt.Errorf("%w: --peers needs --nats, this region's own NATS (its stream lives there)", errUsage)
	case c.Manager != "" && len(c.Peers) > 0:
		return fmt.Errorf("%w: --peers and --manager-nats exclude each other: with a channel manager, the channels come from its desired state", errUsage)
	case c.Manager != "" && c.NATS.URL == "":
		return fmt.Errorf("%w: --manager-nats needs --nats, this region's own NATS (its stream lives there)", errUsage)
	}
	for i, p := range c.Peers {
		if p.Region == c.Region {
			return fmt.Errorf("%w: --peers lists this region %s itself", errUsage, p.Region)
		}
		for _, q := range c.Peers[:i] {
			if q.Region == p.Region {
				return fmt.Errorf("%w: --peers lists %s twice", errUsage, p.Region)
			}
		}
		// peers share the region's NATS credentials unless their URL has its own
		c.Peers[i].NATS.User, c.Peers[i].NATS.Password = c.NATS.User, c.NATS.Password
		c.Peers[i].NATS.Token, c.Peers[i].NATS.CredsFile = c.NATS.Token, c.NATS.CredsFile
	}
	return nil
}

// readConfigFile reads a JSON or YAML file of setting keys. Unknown keys
// are errors, so that a misspelt key does not go unnoticed.
func readConfigFile(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the config file: %w", err)
	}
	raw := map[string]any{}
	switch strings.ToLower(filepath.Ext(path)) {
	case ".json":
		dec := json.NewDecoder(strings.NewReader(string(data)))
		dec.UseNumber()
		if err := dec.Decode(&raw); err != nil {
			return nil, fmt.Errorf("config file %s: %w", path, err)
		}
	case ".yaml", ".yml":
		if err := yaml.Unmarshal(data, &raw); err != nil {
			return nil, fmt.Errorf("config file %s: %w", path, err)
		}
	default:
		return nil, fmt.Errorf("config file %s: the name must end in .json, .yaml or .yml", path)
	}
	known := map[string]bool{}
	for _, s := range settings {
		known[s.name] = true
	}
	out := map[string]string{}
	var unknown []string
	for k, v := range raw {
		if !known[k] {
			unknown = append(unknown, k)
			continue
		}
		switch v := v.(type) {
		case string:
			out[k] = v
		case json.Number:
			out[k] = v.String()
		case int:
			out[k] = strconv.Itoa(v)
		case nil:
		default:
			return nil, fmt.Errorf("config file %s: %s: want a string or an integer, got %v", path, k, v)
		}
	}
	if len(unknown) > 0 {
		sort.Strings(unknown)
		return nil, fmt.Errorf("config file %s: unknown keys %s", path, strings.Join(unknown, ", "))
	}
	return out, nil
}

// parseSize parses a byte size like Redis's config: a number with an
// optional unit b, k (1000), kb (1024), m, mb, g, gb, case-insensitive.
func parseSize(s string) (int, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	units := []struct {
		suffix string
		mult   int64
	}{{"kb", 1 << 10}, {"mb", 1 << 20}, {"gb", 1 << 30}, {"k", 1e3}, {"m", 1e6}, {"g", 1e9}, {"b", 1}}
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(t, u.suffix) {
			t, mult = strings.TrimSuffix(t, u.suffix), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(t, 10, 64)
	if err != nil || n < 0 || n > math.MaxInt32/mult {
		return 0, fmt.Errorf("invalid size %q: want bytes, or a number with kb, mb or gb (up to 2gb)", s)
	}
	return int(n * mult), nil
}

// formatSize renders a size the way parseSize reads it, with the largest
// binary unit that divides it.
func formatSize(n int) string {
	switch {
	case n > 0 && n%(1<<30) == 0:
		return strconv.Itoa(n>>30) + "gb"
	case n > 0 && n%(1<<20) == 0:
		return strconv.Itoa(n>>20) + "mb"
	case n > 0 && n%(1<<10) == 0:
		return strconv.Itoa(n>>10) + "kb"
	default:
		return strconv.Itoa(n)
	}
}
