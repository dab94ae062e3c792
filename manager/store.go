package manager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
	"github.com/rs/zerolog"

	"github.com/globalreplica/globalreplica/channel"
	"github.com/globalreplica/globalreplica/crdt"
)

// Errors of the control plane. Each names what is wrong and, where one
// helps, what the operator can do about it; wrap them with %w and test them
// with errors.Is.
var (
	ErrNoInstance      = errors.New("manager: no such instance (create it with `channel-manager instance create <name>`, or check --instance / $GR_INSTANCE)")
	ErrInstanceExists  = errors.New("manager: the instance exists already (`channel-manager instance show` shows it)")
	ErrInstanceInUse   = errors.New("manager: the instance still has regions (remove them with `channel-manager region remove <id>` first, or delete with --force)")
	ErrNoRegion        = errors.New("manager: no such region (`channel-manager region list` lists them)")
	ErrRegionExists    = errors.New("manager: the region exists already (`channel-manager region list` lists them)")
	ErrNoChannel       = errors.New("manager: no such channel (`channel-manager channel list` lists them)")
	ErrChannelExists   = errors.New("manager: the channel exists already (`channel-manager channel list` lists them)")
	ErrChannelToItself = errors.New("manager: a channel needs two different regions (a region never replicates to itself)")
	ErrEvicted         = errors.New("manager: the region is evicted; it can come back only through `channel-manager rebuild <region> --from <peer>`")
	ErrBusy            = errors.New("manager: another manager is acting on this instance; nothing was changed, retry when it is done")
	ErrLockLost        = errors.New("manager: the manager lock was lost (expired or taken over); the operation stopped part way, check the state and retry")
	ErrConflict        = errors.New("manager: the desired state changed while this operation ran (another writer bypassed the lock?); nothing was overwritten, retry")
	ErrInvalid         = errors.New("manager: invalid input")
)

// Defaults of the store.
const (
	// DefaultRetention is how long each region's stream keeps ops unless
	// the instance says otherwise (7 days).
	DefaultRetention = 168 * time.Hour
	// HeartbeatInterval is how often children publish their heartbeat.
	HeartbeatInterval = 2 * time.Second
	// ConfigHistory is how many revisions of each key the config bucket
	// keeps (for `nats kv history` when something went wrong).
	ConfigHistory = 5
	// markerTTL is how long the config bucket keeps the delete marker of an
	// expired key (the lock); it lets watchers see the expiry.
	markerTTL = time.Minute
)

// Option configures Open and Bind.
type Option func(*options)

type options struct {
	replicas int
	log      zerolog.Logger
}

// WithReplicas sets the number of replicas of the buckets Open creates
// (default 1; use 3 on a clustered NATS). Existing buckets keep theirs.
func WithReplicas(n int) Option { return func(o *options) { o.replicas = n } }

// WithLogger sets the store's logger (default: none).
func WithLogger(l zerolog.Logger) Option { return func(o *options) { o.log = l } }

// Store is the desired state of one global instance and the heartbeats of
// its children, in two NATS KV buckets (see ConfigBucket and
// HeartbeatBucket). Every change of the desired state is revision-checked
// (kv.Create for new keys, kv.Update or a delete with the last revision
// otherwise), so that two writers never silently overwrite each other: the
// loser gets ErrConflict or an "exists" error and nothing changes.
//
// The store does not take the manager lock itself; operators' tools take
// it around a whole operation with Lock.
type Store struct {
	js       jetstream.JetStream
	instance string
	config   jetstream.KeyValue
	beats    jetstream.KeyValue
	log      zerolog.Logger
}

// Open returns the store of instance, creating its buckets if they are
// missing: the config bucket keeps ConfigHistory revisions per key and
// allows per-key TTLs (for the lock), the heartbeat bucket expires entries
// after HeartbeatTTL. Existing buckets are used as they are.
func Open(ctx context.Context, js jetstream.JetStream, instance string, opts ...Option) (*Store, error) {
	s, o, err := newStore(js, instance, opts)
	if err != nil {
		return nil, err
	}
	s.config, err = ensureBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:         ConfigBucket(instance),
		Description:    "Global Replica desired state of instance " + instance,
		History:        ConfigHistory,
		Storage:        jetstream.FileStorage,
		Replicas:       o.replicas,
		LimitMarkerTTL: markerTTL,
	})
	if err != nil {
		return nil, fmt.Errorf("manager: config bucket of %s: %w", instance, err)
	}
	s.beats, err = ensureBucket(ctx, js, jetstream.KeyValueConfig{
		Bucket:      HeartbeatBucket(instance),
		Description: "Global Replica heartbeats of the children of instance " + instance,
		History:     1,
		TTL:         HeartbeatTTL,
		Storage:     jetstream.MemoryStorage,
		Replicas:    o.replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("manager: heartbeat bucket of %s: %w", instance, err)
	}
	return s, nil
}

// Bind returns the store of an instance whose buckets exist; it creates
// nothing and fails with ErrNoInstance when they are missing.
func Bind(ctx context.Context, js jetstream.JetStream, instance string, opts ...Option) (*Store, error) {
	s, _, err := newStore(js, instance, opts)
	if err != nil {
		return nil, err
	}
	if s.config, err = js.KeyValue(ctx, ConfigBucket(instance)); err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("%w: %s", ErrNoInstance, instance)
		}
		return nil, fmt.Errorf("manager: config bucket of %s: %w", instance, err)
	}
	if s.beats, err = js.KeyValue(ctx, HeartbeatBucket(instance)); err != nil {
		if errors.Is(err, jetstream.ErrBucketNotFound) {
			return nil, fmt.Errorf("%w: %s (its heartbeat bucket is missing)", ErrNoInstance, instance)
		}
		return nil, fmt.Errorf("manager: heartbeat bucket of %s: %w", instance, err)
	}
	return s, nil
}

func newStore(js jetstream.JetStream, instance string, opts []Option) (*Store, options, error) {
	o := options{replicas: 1, log: zerolog.Nop()}
	for _, opt := range opts {
		opt(&o)
	}
	if !crdt.ValidRegion(instance) {
		return nil, o, fmt.Errorf("%w: instance name %q: 1-32 characters of a-z, 0-9 and '-', starting with a letter", ErrInvalid, instance)
	}
	if o.replicas < 1 || o.replicas > 5 {
		return nil, o, fmt.Errorf("%w: %d replicas: NATS keeps 1 to 5", ErrInvalid, o.replicas)
	}
	return &Store{js: js, instance: instance, log: o.log.With().Str("instance", instance).Logger()}, o, nil
}

// ensureBucket binds a bucket or creates it when it is missing, leaving an
// existing bucket's configuration alone.
func ensureBucket(ctx context.Context, js jetstream.JetStream, cfg jetstream.KeyValueConfig) (jetstream.KeyValue, error) {
	kv, err := js.KeyValue(ctx, cfg.Bucket)
	if err == nil || !errors.Is(err, jetstream.ErrBucketNotFound) {
		return kv, err
	}
	kv, err = js.CreateKeyValue(ctx, cfg)
	if errors.Is(err, jetstream.ErrBucketExists) { // created meanwhile by another process
		return js.KeyValue(ctx, cfg.Bucket)
	}
	return kv, err
}

// Instance returns the name of the store's instance.
func (s *Store) Instance() string { return s.instance }

// JetStream returns the JetStream context of the config store's NATS.
func (s *Store) JetStream() jetstream.JetStream { return s.js }

// --- generic revision-checked access ---------------------------------------

// get reads key into v and returns its revision; missing keys give
// jetstream.ErrKeyNotFound.
func (s *Store) get(ctx context.Context, key string, v any) (uint64, error) {
	e, err := s.config.Get(ctx, key)
	if err != nil {
		return 0, err
	}
	if err := json.Unmarshal(e.Value(), v); err != nil {
		return 0, fmt.Errorf("manager: key %s of %s holds invalid JSON: %w", key, ConfigBucket(s.instance), err)
	}
	return e.Revision(), nil
}

// create writes a new key; an existing one gives jetstream.ErrKeyExists.
func (s *Store) create(ctx context.Context, key string, v any) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	return s.config.Create(ctx, key, b)
}

// update writes key if its revision is still rev, else ErrConflict.
func (s *Store) update(ctx context.Context, key string, v any, rev uint64) (uint64, error) {
	b, err := json.Marshal(v)
	if err != nil {
		return 0, err
	}
	n, err := s.config.Update(ctx, key, b, rev)
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return 0, fmt.Errorf("%w (key %s)", ErrConflict, key)
	}
	return n, err
}

// remove deletes key if its revision is still rev, else ErrConflict.
func (s *Store) remove(ctx context.Context, key string, rev uint64) error {
	err := s.config.Delete(ctx, key, jetstream.LastRevision(rev))
	if errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return fmt.Errorf("%w (key %s)", ErrConflict, key)
	}
	return err
}

// --- instance ----------------------------------------------------------------

// CreateInstance records the instance (Name is the store's; a zero
// Retention means DefaultRetention; Created is set now). It fails with
// ErrInstanceExists when it exists already.
func (s *Store) CreateInstance(ctx context.Context, in Instance) (Instance, error) {
	if in.Name != "" && in.Name != s.instance {
		return Instance{}, fmt.Errorf("%w: instance %q in the store of %q", ErrInvalid, in.Name, s.instance)
	}
	if in.Retention < 0 {
		return Instance{}, fmt.Errorf("%w: negative retention %s", ErrInvalid, in.Retention)
	}
	in.Name = s.instance
	if in.Retention == 0 {
		in.Retention = DefaultRetention
	}
	in.Created = time.Now().UTC()
	if _, err := s.create(ctx, KeyInstance, in); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return Instance{}, fmt.Errorf("%w: %s", ErrInstanceExists, s.instance)
		}
		return Instance{}, err
	}
	s.log.Info().Dur("retention", in.Retention).Msg("instance created")
	return in, nil
}

// GetInstance returns the instance, or ErrNoInstance.
func (s *Store) GetInstance(ctx context.Context) (Instance, error) {
	var in Instance
	if _, err := s.get(ctx, KeyInstance, &in); err != nil {
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return Instance{}, fmt.Errorf("%w: %s", ErrNoInstance, s.instance)
		}
		return Instance{}, err
	}
	return in, nil
}

// UpdateInstance applies f to the instance and writes it back if nobody
// changed it meanwhile (else ErrConflict). f must not change the name.
func (s *Store) UpdateInstance(ctx context.Context, f func(*Instance) error) (Instance, error) {
	var in Instance
	rev, err := s.get(ctx, KeyInstance, &in)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Instance{}, fmt.Errorf("%w: %s", ErrNoInstance, s.instance)
	}
	if err != nil {
		return Instance{}, err
	}
	if err := f(&in); err != nil {
		return Instance{}, err
	}
	if in.Name != s.instance {
		return Instance{}, fmt.Errorf("%w: an instance's name cannot change", ErrInvalid)
	}
	if in.Retention <= 0 {
		return Instance{}, fmt.Errorf("%w: retention %s: a positive duration", ErrInvalid, in.Retention)
	}
	if _, err := s.update(ctx, KeyInstance, in, rev); err != nil {
		return Instance{}, err
	}
	return in, nil
}

// DeleteInstance deletes the instance with its desired state and
// heartbeats (both buckets). It refuses with ErrInstanceInUse while
// regions exist, unless force. The regions' streams in their own NATS are
// left alone: they age out with their retention. Children of the instance
// drop their channels when they notice.
func (s *Store) DeleteInstance(ctx context.Context, force bool) error {
	if _, err := s.GetInstance(ctx); err != nil {
		return err
	}
	regions, err := s.Regions(ctx)
	if err != nil {
		return err
	}
	if len(regions) > 0 && !force {
		ids := make([]string, len(regions))
		for i, r := range regions {
			ids[i] = r.ID
		}
		return fmt.Errorf("%w: %s", ErrInstanceInUse, strings.Join(ids, ", "))
	}
	for _, b := range []string{HeartbeatBucket(s.instance), ConfigBucket(s.instance)} {
		if err := s.js.DeleteKeyValue(ctx, b); err != nil && !errors.Is(err, jetstream.ErrBucketNotFound) {
			return fmt.Errorf("manager: deleting bucket %s: %w", b, err)
		}
	}
	s.log.Info().Bool("force", force).Int("regions", len(regions)).Msg("instance deleted")
	return nil
}

// --- regions -----------------------------------------------------------------

// ValidateRegionID returns an ErrInvalid error for an id that is not a
// valid region id.
func ValidateRegionID(id string) error {
	if !crdt.ValidRegion(id) {
		return fmt.Errorf("%w: region id %q: %w", ErrInvalid, id, crdt.ErrBadRegion)
	}
	return nil
}

func (s *Store) region(ctx context.Context, id string) (Region, uint64, error) {
	if err := ValidateRegionID(id); err != nil {
		return Region{}, 0, err
	}
	var r Region
	rev, err := s.get(ctx, RegionKey(id), &r)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Region{}, 0, fmt.Errorf("%w: %s", ErrNoRegion, id)
	}
	return r, rev, err
}

// GetRegion returns a region, or ErrNoRegion.
func (s *Store) GetRegion(ctx context.Context, id string) (Region, error) {
	r, _, err := s.region(ctx, id)
	return r, err
}

// Regions returns every region (evicted ones too), by id.
func (s *Store) Regions(ctx context.Context) ([]Region, error) {
	st, err := s.Load(ctx)
	if err != nil {
		return nil, err
	}
	return st.RegionList(), nil
}

// AddRegion adds a region and the channels both ways between it and every
// other region that is not evicted, and returns the channels it created.
// Invalid input (bad id, no NATS URL, no Redis address), a missing
// instance or an existing region change nothing. Should a write fail part
// way, what was written is rolled back.
func (s *Store) AddRegion(ctx context.Context, r Region) (Region, []Channel, error) {
	if err := ValidateRegionID(r.ID); err != nil {
		return Region{}, nil, err
	}
	switch {
	case strings.TrimSpace(r.NATS) == "":
		return Region{}, nil, fmt.Errorf("%w: region %s needs the URL of its NATS (where its stream lives)", ErrInvalid, r.ID)
	case strings.TrimSpace(r.Redis) == "":
		return Region{}, nil, fmt.Errorf("%w: region %s needs the address of its Redis", ErrInvalid, r.ID)
	case r.Replica != "" && r.Replica == r.Redis:
		return Region{}, nil, fmt.Errorf("%w: region %s: the replica %s is the master itself", ErrInvalid, r.ID, r.Replica)
	}
	st, err := s.Load(ctx)
	if err != nil {
		return Region{}, nil, err
	}
	if st.Instance == nil {
		return Region{}, nil, fmt.Errorf("%w: %s", ErrNoInstance, s.instance)
	}
	if old, ok := st.Regions[r.ID]; ok {
		if old.Evicted {
			return Region{}, nil, fmt.Errorf("%w: %s (evicted: bring it back with `channel-manager rebuild`, or remove it first)", ErrRegionExists, r.ID)
		}
		return Region{}, nil, fmt.Errorf("%w: %s", ErrRegionExists, r.ID)
	}
	r.Evicted = false
	r.Added = time.Now().UTC()
	if _, err := s.create(ctx, RegionKey(r.ID), r); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return Region{}, nil, fmt.Errorf("%w: %s", ErrRegionExists, r.ID)
		}
		return Region{}, nil, err
	}
	var made []Channel
	rollback := func(cause error) (Region, []Channel, error) {
		var errs []error
		for _, c := range made {
			errs = append(errs, s.config.Delete(ctx, ChannelKey(c.Origin, c.Dest)))
		}
		errs = append(errs, s.config.Delete(ctx, RegionKey(r.ID)))
		if err := errors.Join(errs...); err != nil {
			return Region{}, nil, fmt.Errorf("%w (and rolling back failed: %w)", cause, err)
		}
		return Region{}, nil, cause
	}
	for _, other := range st.RegionList() {
		if other.Evicted {
			continue
		}
		for _, c := range []Channel{{Origin: other.ID, Dest: r.ID}, {Origin: r.ID, Dest: other.ID}} {
			_, err := s.create(ctx, ChannelKey(c.Origin, c.Dest), c)
			switch {
			case errors.Is(err, jetstream.ErrKeyExists): // left over from an earlier run: keep its controls
			case err != nil:
				return rollback(fmt.Errorf("manager: creating channel %s->%s: %w", c.Origin, c.Dest, err))
			default:
				made = append(made, c)
			}
		}
	}
	s.log.Info().Str("region", r.ID).Str("nats", r.NATS).Str("redis", r.Redis).Int("channels", len(made)).Msg("region added")
	return r, made, nil
}

// UpdateRegion applies f to a region and writes it back if nobody changed
// it meanwhile (else ErrConflict). f must not change the id. For failover
// (swap Redis and Replica) and rebuild (clear Evicted).
func (s *Store) UpdateRegion(ctx context.Context, id string, f func(*Region) error) (Region, error) {
	r, rev, err := s.region(ctx, id)
	if err != nil {
		return Region{}, err
	}
	if err := f(&r); err != nil {
		return Region{}, err
	}
	if r.ID != id {
		return Region{}, fmt.Errorf("%w: a region's id cannot change (%s to %s)", ErrInvalid, id, r.ID)
	}
	if _, err := s.update(ctx, RegionKey(id), r, rev); err != nil {
		return Region{}, err
	}
	return r, nil
}

// RemoveRegion removes a region and every channel from or to it, and
// returns the channels it removed. The region's children drop their
// channels; its stream stays in its NATS until it ages out.
func (s *Store) RemoveRegion(ctx context.Context, id string) ([]Channel, error) {
	_, rev, err := s.region(ctx, id)
	if err != nil {
		return nil, err
	}
	gone, err := s.removeChannelsOf(ctx, id)
	if err != nil {
		return gone, err
	}
	if err := s.remove(ctx, RegionKey(id), rev); err != nil {
		return gone, err
	}
	s.log.Info().Str("region", id).Int("channels", len(gone)).Msg("region removed")
	return gone, nil
}

// EvictRegion marks a region evicted and removes every channel from or to
// it: the other regions stop waiting for it, so the tombstone floor (the
// minimum applied vector over the regions that are not evicted) moves on
// and tombstones are collected. An evicted region comes back only through
// a rebuild from a peer (which clears Evicted and recreates its channels);
// a region that is already evicted gives ErrEvicted.
func (s *Store) EvictRegion(ctx context.Context, id string) (Region, []Channel, error) {
	r, err := s.UpdateRegion(ctx, id, func(r *Region) error {
		if r.Evicted {
			return fmt.Errorf("%w: %s", ErrEvicted, r.ID)
		}
		r.Evicted = true
		return nil
	})
	if err != nil {
		return Region{}, nil, err
	}
	gone, err := s.removeChannelsOf(ctx, id)
	if err != nil {
		return r, gone, err
	}
	s.log.Info().Str("region", id).Int("channels", len(gone)).Msg("region evicted")
	return r, gone, nil
}

func (s *Store) removeChannelsOf(ctx context.Context, id string) ([]Channel, error) {
	st, err := s.Load(ctx)
	if err != nil {
		return nil, err
	}
	var gone []Channel
	for _, c := range st.ChannelList() {
		if c.Origin != id && c.Dest != id {
			continue
		}
		if err := s.remove(ctx, ChannelKey(c.Origin, c.Dest), st.Revisions[ChannelKey(c.Origin, c.Dest)]); err != nil {
			return gone, fmt.Errorf("manager: removing channel %s->%s: %w", c.Origin, c.Dest, err)
		}
		gone = append(gone, c)
	}
	return gone, nil
}

// --- channels ----------------------------------------------------------------

func validatePair(origin, dest string) error {
	if err := ValidateRegionID(origin); err != nil {
		return err
	}
	if err := ValidateRegionID(dest); err != nil {
		return err
	}
	if origin == dest {
		return fmt.Errorf("%w: %s->%s", ErrChannelToItself, origin, dest)
	}
	return nil
}

func (s *Store) channel(ctx context.Context, origin, dest string) (Channel, uint64, error) {
	if err := validatePair(origin, dest); err != nil {
		return Channel{}, 0, err
	}
	var c Channel
	rev, err := s.get(ctx, ChannelKey(origin, dest), &c)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		// Say which end is unknown when one is: a better hint.
		for _, id := range []string{origin, dest} {
			if _, _, rerr := s.region(ctx, id); errors.Is(rerr, ErrNoRegion) {
				return Channel{}, 0, rerr
			}
		}
		return Channel{}, 0, fmt.Errorf("%w: %s->%s", ErrNoChannel, origin, dest)
	}
	return c, rev, err
}

// GetChannel returns the channel origin → dest, or ErrNoChannel (or
// ErrNoRegion when an end is unknown).
func (s *Store) GetChannel(ctx context.Context, origin, dest string) (Channel, error) {
	c, _, err := s.channel(ctx, origin, dest)
	return c, err
}

// Channels returns every channel, by origin and dest.
func (s *Store) Channels(ctx context.Context) ([]Channel, error) {
	st, err := s.Load(ctx)
	if err != nil {
		return nil, err
	}
	return st.ChannelList(), nil
}

// CreateChannel creates the channel c.Origin → c.Dest with its controls.
// Both regions must exist and not be evicted.
func (s *Store) CreateChannel(ctx context.Context, c Channel) (Channel, error) {
	if err := validatePair(c.Origin, c.Dest); err != nil {
		return Channel{}, err
	}
	if err := validateThrottle(c.OpsPerSec, c.BytesPerSec); err != nil {
		return Channel{}, err
	}
	for _, id := range []string{c.Origin, c.Dest} {
		r, _, err := s.region(ctx, id)
		if err != nil {
			return Channel{}, err
		}
		if r.Evicted {
			return Channel{}, fmt.Errorf("%w: %s", ErrEvicted, id)
		}
	}
	if _, err := s.create(ctx, ChannelKey(c.Origin, c.Dest), c); err != nil {
		if errors.Is(err, jetstream.ErrKeyExists) {
			return Channel{}, fmt.Errorf("%w: %s->%s", ErrChannelExists, c.Origin, c.Dest)
		}
		return Channel{}, err
	}
	s.log.Info().Str("origin", c.Origin).Str("dest", c.Dest).Msg("channel created")
	return c, nil
}

// DeleteChannel deletes the channel origin → dest; the destination's
// children stop applying it. Its position stays in the destination's
// applied vector, so a channel created again later resumes from there.
func (s *Store) DeleteChannel(ctx context.Context, origin, dest string) error {
	_, rev, err := s.channel(ctx, origin, dest)
	if err != nil {
		return err
	}
	if err := s.remove(ctx, ChannelKey(origin, dest), rev); err != nil {
		return err
	}
	s.log.Info().Str("origin", origin).Str("dest", dest).Msg("channel deleted")
	return nil
}

// UpdateChannel applies f to the channel origin → dest and writes it back
// if nobody changed it meanwhile (else ErrConflict). f must not change the
// ends.
func (s *Store) UpdateChannel(ctx context.Context, origin, dest string, f func(*Channel) error) (Channel, error) {
	c, rev, err := s.channel(ctx, origin, dest)
	if err != nil {
		return Channel{}, err
	}
	if err := f(&c); err != nil {
		return Channel{}, err
	}
	if c.Origin != origin || c.Dest != dest {
		return Channel{}, fmt.Errorf("%w: a channel's ends cannot change", ErrInvalid)
	}
	if err := validateThrottle(c.OpsPerSec, c.BytesPerSec); err != nil {
		return Channel{}, err
	}
	if _, err := s.update(ctx, ChannelKey(origin, dest), c, rev); err != nil {
		return Channel{}, err
	}
	s.log.Info().Str("origin", origin).Str("dest", dest).Bool("paused", c.Paused).
		Float64("ops_per_sec", c.OpsPerSec).Float64("bytes_per_sec", c.BytesPerSec).Msg("channel updated")
	return c, nil
}

// PauseChannel, ResumeChannel and ThrottleChannel set a channel's
// controls; the destination's children apply them live.
func (s *Store) PauseChannel(ctx context.Context, origin, dest string) (Channel, error) {
	return s.UpdateChannel(ctx, origin, dest, func(c *Channel) error { c.Paused = true; return nil })
}

// ResumeChannel clears a channel's pause.
func (s *Store) ResumeChannel(ctx context.Context, origin, dest string) (Channel, error) {
	return s.UpdateChannel(ctx, origin, dest, func(c *Channel) error { c.Paused = false; return nil })
}

// ThrottleChannel limits a channel's apply rate (0: unlimited).
func (s *Store) ThrottleChannel(ctx context.Context, origin, dest string, opsPerSec, bytesPerSec float64) (Channel, error) {
	return s.UpdateChannel(ctx, origin, dest, func(c *Channel) error {
		c.OpsPerSec, c.BytesPerSec = opsPerSec, bytesPerSec
		return nil
	})
}

func validateThrottle(ops, bytes float64) error {
	if ops < 0 || bytes < 0 {
		return fmt.Errorf("%w: throttle limits must be >= 0 (0: unlimited)", ErrInvalid)
	}
	return nil
}

// --- floor ---------------------------------------------------------------------

// Floor returns the tombstone floor and its revision; rev 0 means none was
// written yet (and the Floor is zero).
func (s *Store) Floor(ctx context.Context) (Floor, uint64, error) {
	var f Floor
	rev, err := s.get(ctx, KeyFloor, &f)
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return Floor{}, 0, nil
	}
	return f, rev, err
}

// PutFloor writes the tombstone floor if its revision is still rev (0: it
// must not exist yet), else ErrConflict; it returns the new revision.
func (s *Store) PutFloor(ctx context.Context, f Floor, rev uint64) (uint64, error) {
	if rev == 0 {
		n, err := s.create(ctx, KeyFloor, f)
		if errors.Is(err, jetstream.ErrKeyExists) {
			return 0, fmt.Errorf("%w (key %s)", ErrConflict, KeyFloor)
		}
		return n, err
	}
	return s.update(ctx, KeyFloor, f, rev)
}

// --- the whole state and its changes ------------------------------------------

// State is the desired state at one revision of the config bucket.
type State struct {
	Instance  *Instance          // nil: the instance does not exist (yet)
	Regions   map[string]Region  // by id
	Channels  map[string]Channel // by ChannelKey
	Floor     *Floor
	Revisions map[string]uint64 // revision of every key
	Revision  uint64            // the highest revision seen
}

// NewState returns an empty state.
func NewState() State {
	return State{Regions: map[string]Region{}, Channels: map[string]Channel{}, Revisions: map[string]uint64{}}
}

// Clone returns a deep copy.
func (st State) Clone() State {
	out := NewState()
	if st.Instance != nil {
		in := *st.Instance
		out.Instance = &in
	}
	for k, v := range st.Regions {
		out.Regions[k] = v
	}
	for k, v := range st.Channels {
		out.Channels[k] = v
	}
	for k, v := range st.Revisions {
		out.Revisions[k] = v
	}
	if st.Floor != nil {
		f := Floor{At: st.Floor.At, Applied: make(map[string]uint64, len(st.Floor.Applied))}
		for k, v := range st.Floor.Applied {
			f.Applied[k] = v
		}
		out.Floor = &f
	}
	out.Revision = st.Revision
	return out
}

// RegionList returns the regions by id.
func (st State) RegionList() []Region {
	out := make([]Region, 0, len(st.Regions))
	for _, r := range st.Regions {
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].ID < out[j].ID })
	return out
}

// ChannelList returns the channels by origin, then dest.
func (st State) ChannelList() []Channel {
	out := make([]Channel, 0, len(st.Channels))
	for _, c := range st.Channels {
		out = append(out, c)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Origin != out[j].Origin {
			return out[i].Origin < out[j].Origin
		}
		return out[i].Dest < out[j].Dest
	})
	return out
}

// Apply records one entry of the config bucket: a value (deleted false) or
// a delete or purge marker. Keys it does not know (the lock) are ignored.
func (st *State) Apply(key string, value []byte, rev uint64, deleted bool) error {
	st.Revision = max(st.Revision, rev)
	if deleted {
		delete(st.Revisions, key)
	} else {
		st.Revisions[key] = rev
	}
	switch {
	case key == KeyInstance:
		if deleted {
			st.Instance = nil
			return nil
		}
		var in Instance
		if err := json.Unmarshal(value, &in); err != nil {
			return fmt.Errorf("manager: key %s: %w", key, err)
		}
		st.Instance = &in
	case key == KeyFloor:
		if deleted {
			st.Floor = nil
			return nil
		}
		var f Floor
		if err := json.Unmarshal(value, &f); err != nil {
			return fmt.Errorf("manager: key %s: %w", key, err)
		}
		st.Floor = &f
	case strings.HasPrefix(key, "region."):
		id := strings.TrimPrefix(key, "region.")
		if deleted {
			delete(st.Regions, id)
			return nil
		}
		var r Region
		if err := json.Unmarshal(value, &r); err != nil {
			return fmt.Errorf("manager: key %s: %w", key, err)
		}
		st.Regions[id] = r
	case strings.HasPrefix(key, "channel."):
		if deleted {
			delete(st.Channels, key)
			return nil
		}
		var c Channel
		if err := json.Unmarshal(value, &c); err != nil {
			return fmt.Errorf("manager: key %s: %w", key, err)
		}
		st.Channels[key] = c
	}
	return nil
}

func (st *State) applyEntry(e jetstream.KeyValueEntry) error {
	deleted := e.Operation() != jetstream.KeyValuePut
	return st.Apply(e.Key(), e.Value(), e.Revision(), deleted)
}

// Load reads the whole desired state.
func (s *Store) Load(ctx context.Context) (State, error) {
	entries, err := s.latest(ctx, ConfigBucket(s.instance))
	if err != nil {
		return State{}, err
	}
	st := NewState()
	for _, e := range entries {
		if e.deleted {
			continue
		}
		if err := st.Apply(e.key, e.value, e.rev, false); err != nil {
			return State{}, err
		}
	}
	return st, nil
}

// kvEntry is the latest message of one key of a bucket.
type kvEntry struct {
	key     string
	value   []byte
	rev     uint64
	deleted bool // a delete or purge marker
}

// latest reads the latest entry of every key of a bucket: the subjects its
// stream holds (stream info), then the last message of each (a direct
// get). A KV watcher's first values are not used for this: the watcher
// says it delivered them all once the consumer reports nothing pending,
// and while keys change that can come before some keys were delivered
// (nats-io/nats-server#4824). Here a key that changes meanwhile is read at
// its newer revision, and one that expires meanwhile is left out.
func (s *Store) latest(ctx context.Context, bucket string) ([]kvEntry, error) {
	stream, err := s.js.Stream(ctx, "KV_"+bucket)
	if err != nil {
		return nil, fmt.Errorf("manager: reading %s: %w", bucket, err)
	}
	pre := "$KV." + bucket + "."
	info, err := stream.Info(ctx, jetstream.WithSubjectFilter(pre+">"))
	if err != nil {
		return nil, fmt.Errorf("manager: reading %s: %w", bucket, err)
	}
	subjects := make([]string, 0, len(info.State.Subjects))
	for subj := range info.State.Subjects {
		subjects = append(subjects, subj)
	}
	sort.Strings(subjects)
	out := make([]kvEntry, 0, len(subjects))
	for _, subj := range subjects {
		m, err := stream.GetLastMsgForSubject(ctx, subj)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue // expired or purged since the stream info
		}
		if err != nil {
			return nil, fmt.Errorf("manager: reading %s: %w", subj, err)
		}
		op := m.Header.Get(kvOperationHeader)
		out = append(out, kvEntry{
			key: strings.TrimPrefix(subj, pre), value: m.Data, rev: m.Sequence,
			deleted: op == "DEL" || op == "PURGE" || m.Header.Get(jetstream.MarkerReasonHeader) != "",
		})
	}
	return out, nil
}

// kvOperationHeader marks a KV delete ("DEL") or purge ("PURGE") message.
const kvOperationHeader = "KV-Operation"

// Watch follows the desired state: it sends the whole state once it has
// read the current values, and again after every change. A slow reader
// gets the latest state, never a stale one (the channel holds one state
// and older ones are replaced). An entry that does not parse is logged and
// skipped. The channel is closed when ctx ends or the watch stops.
func (s *Store) Watch(ctx context.Context) (<-chan State, error) {
	// The watcher first, for the changes from now on; then the current
	// values (see latest); a change the current values already hold is
	// skipped by its revision.
	w, err := s.config.WatchAll(ctx, jetstream.UpdatesOnly())
	if err != nil {
		return nil, fmt.Errorf("manager: watching %s: %w", ConfigBucket(s.instance), err)
	}
	entries, err := s.latest(ctx, ConfigBucket(s.instance))
	if err != nil {
		_ = w.Stop()
		return nil, err
	}
	st := NewState()
	seen := map[string]uint64{} // the newest revision applied of each key, deletes too
	for _, e := range entries {
		seen[e.key] = e.rev
		if e.deleted {
			continue
		}
		if err := st.Apply(e.key, e.value, e.rev, false); err != nil {
			s.log.Error().Err(err).Str("key", e.key).Msg("skipping an entry of the desired state that does not parse")
		}
	}
	out := make(chan State, 1)
	out <- st.Clone()
	go func() {
		defer close(out)
		defer func() { _ = w.Stop() }()
		for {
			select {
			case <-ctx.Done():
				return
			case e, ok := <-w.Updates():
				if !ok {
					return
				}
				if e == nil || e.Revision() <= seen[e.Key()] {
					continue
				}
				seen[e.Key()] = e.Revision()
				if err := st.applyEntry(e); err != nil {
					s.log.Error().Err(err).Str("key", e.Key()).Msg("skipping an entry of the desired state that does not parse")
					continue
				}
				select { // replace an unread state with the newer one
				case <-out:
				default:
				}
				out <- st.Clone()
			}
		}
	}()
	return out, nil
}

// --- heartbeats ------------------------------------------------------------------

// Heartbeat is what a child process reports about itself every
// HeartbeatInterval; it expires after HeartbeatTTL.
type Heartbeat struct {
	Region string    `json:"region"`
	Owner  string    `json:"owner"` // the child process's id
	Time   time.Time `json:"time"`
	// Seq is the region's last issued op sequence; Applied its applied
	// vector (the sequence applied from each origin).
	Seq     uint64            `json:"seq"`
	Applied map[string]uint64 `json:"applied"`
	// Backlog is the number of the region's ops in its op log, not yet
	// shipped to its stream.
	Backlog  int64            `json:"backlog"`
	Channels []channel.Status `json:"channels"` // inbound channels run by this process
	Version  string           `json:"version,omitempty"`
	Error    string           `json:"error,omitempty"` // why a part of the heartbeat is missing
	// Redis is what the child sees of its region's Redis master and
	// replica (the failover's input, failover.go); nil from children that
	// do not report it.
	Redis *RedisHealth `json:"redis,omitempty"`
	// Rebuild is the progress of the rebuild this process runs, if any.
	Rebuild *RebuildProgress `json:"rebuild,omitempty"`
}

// Fresh reports whether the heartbeat is younger than HeartbeatTTL at now.
func (h Heartbeat) Fresh(now time.Time) bool { return now.Sub(h.Time) < HeartbeatTTL }

// heartbeatOwner turns an owner id into a key token (KV keys allow
// letters, digits, '-', '_' and '='; dots separate tokens).
func heartbeatOwner(owner string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-', r == '_', r == '=':
			return r
		}
		return '_'
	}, owner)
}

// PutHeartbeat publishes a child's heartbeat. Each child writes only its
// own key, so a plain put is enough here.
func (s *Store) PutHeartbeat(ctx context.Context, h Heartbeat) error {
	if err := ValidateRegionID(h.Region); err != nil {
		return err
	}
	if h.Owner == "" {
		return fmt.Errorf("%w: a heartbeat needs the child's owner id", ErrInvalid)
	}
	b, err := json.Marshal(h)
	if err != nil {
		return err
	}
	if _, err := s.beats.Put(ctx, HeartbeatKey(h.Region, heartbeatOwner(h.Owner)), b); err != nil {
		return fmt.Errorf("manager: heartbeat: %w", err)
	}
	return nil
}

// Heartbeats returns the heartbeats that have not expired, by region and
// owner.
func (s *Store) Heartbeats(ctx context.Context) ([]Heartbeat, error) {
	entries, err := s.latest(ctx, HeartbeatBucket(s.instance))
	if err != nil {
		return nil, err
	}
	out := make([]Heartbeat, 0, len(entries))
	for _, e := range entries {
		if e.deleted {
			continue
		}
		var h Heartbeat
		if err := json.Unmarshal(e.value, &h); err != nil {
			s.log.Warn().Err(err).Str("key", e.key).Msg("skipping a heartbeat that does not parse")
			continue
		}
		out = append(out, h)
	}
	sort.Slice(out, func(i, j int) bool {
		if out[i].Region != out[j].Region {
			return out[i].Region < out[j].Region
		}
		return out[i].Owner < out[j].Owner
	})
	return out, nil
}
