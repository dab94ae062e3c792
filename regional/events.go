package regional

import (
	"fmt"
	"time"
)

// EventKind says what changed.
type EventKind string

// Kinds of events.
const (
	// RegionDown: a region failed FailureThreshold times in a row (or its
	// first probe at start).
	RegionDown EventKind = "region-down"
	// RegionUp: a region that was down passed a probe.
	RegionUp EventKind = "region-up"
	// Failover: commands go to a less preferred region from now on (or,
	// with From empty, to a region again after none was available).
	Failover EventKind = "failover"
	// Failback: commands go to a more preferred region from now on.
	Failback EventKind = "failback"
	// NoRegion: no region meets the conditions; commands fail at once with
	// ErrNoRegion until one does.
	NoRegion EventKind = "no-region"
)

// Event is a change the application may want to log.
type Event struct {
	Kind   EventKind
	Region string // RegionDown, RegionUp: the region
	From   string // Failover, Failback, NoRegion: the region commands went to ("" for none)
	To     string // Failover, Failback: the region commands go to now
	Reason string
	At     time.Time
}

// String formats the event for a log line.
func (e Event) String() string {
	switch e.Kind {
	case RegionDown, RegionUp:
		return fmt.Sprintf("%s %s: %s", e.Kind, e.Region, e.Reason)
	case NoRegion:
		return fmt.Sprintf("%s (was %s): %s", e.Kind, e.From, e.Reason)
	}
	from := e.From
	if from == "" {
		from = "(none)"
	}
	return fmt.Sprintf("%s %s -> %s: %s", e.Kind, from, e.To, e.Reason)
}
