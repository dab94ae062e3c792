package channel

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/globalreplica/globalreplica/crdt"
)

// Sentinel errors of the package.
var (
	// ErrPaused is returned by operations that need a running channel.
	ErrPaused = errors.New("channel: paused")
	// ErrNeedsRebuild is the state of a channel that met a gap.
	ErrNeedsRebuild = errors.New("channel: needs rebuild")
	// ErrSequence is returned when the op log and the stream disagree on
	// sequence numbers in a way that shipping cannot repair.
	ErrSequence = errors.New("channel: op log and stream sequences disagree")
)

// DefaultRetention is how long a stream keeps ops: how long a region may be
// away and still resume without a full resync.
const DefaultRetention = 7 * 24 * time.Hour

// StreamConfig describes a region's stream.
type StreamConfig struct {
	Instance  string
	Region    string
	Retention time.Duration // default DefaultRetention
	MaxBytes  int64         // 0: unlimited
	Replicas  int           // default 1
}

func (c *StreamConfig) validate() error {
	if !crdt.ValidRegion(c.Instance) {
		return fmt.Errorf("channel: instance name %q: names are 1-32 characters of a-z, 0-9 and '-', starting with a letter", c.Instance)
	}
	if !crdt.ValidRegion(c.Region) {
		return fmt.Errorf("channel: region %q: %w", c.Region, crdt.ErrBadRegion)
	}
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.Replicas == 0 {
		c.Replicas = 1
	}
	return nil
}

// StreamName returns the JetStream stream name of a region's ops.
func StreamName(instance, region string) string { return "GR_" + instance + "_" + region }

// Subject returns the subject a region's ops are published on.
func Subject(instance, region string) string { return "gr." + instance + "." + region + ".ops" }

// EnsureStream creates the region's stream or updates its limits.
func EnsureStream(ctx context.Context, js jetstream.JetStream, cfg StreamConfig) (jetstream.Stream, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	sc := jetstream.StreamConfig{
		Name:        StreamName(cfg.Instance, cfg.Region),
		Description: "Global Replica ops of region " + cfg.Region,
		Subjects:    []string{Subject(cfg.Instance, cfg.Region)},
		Storage:     jetstream.FileStorage,
		Retention:   jetstream.LimitsPolicy,
		MaxAge:      cfg.Retention,
		MaxBytes:    cfg.MaxBytes,
		Replicas:    cfg.Replicas,
		Discard:     jetstream.DiscardOld,
		Duplicates:  2 * time.Minute,
	}
	if sc.MaxBytes == 0 {
		sc.MaxBytes = -1
	}
	s, err := js.CreateOrUpdateStream(ctx, sc)
	if err != nil {
		return nil, fmt.Errorf("channel: stream %s: %w", sc.Name, err)
	}
	return s, nil
}
