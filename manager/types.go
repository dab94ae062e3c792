package manager

import "time"

// The desired state lives in the KV bucket ConfigBucket(instance):
//
//	instance                 Instance
//	region.<id>              Region
//	channel.<origin>.<dest>  Channel
//	gc.floor                 Floor (written by the control loop)
//
// Children publish heartbeats in HeartbeatBucket(instance), a bucket whose
// entries expire (HeartbeatTTL): key child.<region>.<owner> → Heartbeat.

// ConfigBucket returns the KV bucket of an instance's desired state.
func ConfigBucket(instance string) string { return "gr-config-" + instance }

// HeartbeatBucket returns the KV bucket of an instance's heartbeats.
func HeartbeatBucket(instance string) string { return "gr-heartbeat-" + instance }

// Key names in the config bucket.
const (
	KeyInstance = "instance"
	KeyFloor    = "gc.floor"
	KeyLock     = "lock"
)

// RegionKey returns the config key of a region.
func RegionKey(id string) string { return "region." + id }

// ChannelKey returns the config key of the channel origin → dest.
func ChannelKey(origin, dest string) string { return "channel." + origin + "." + dest }

// HeartbeatKey returns the heartbeat key of one child process.
func HeartbeatKey(region, owner string) string { return "child." + region + "." + owner }

// HeartbeatTTL is how long a heartbeat stays without being renewed.
const HeartbeatTTL = 15 * time.Second

// Instance is a global instance.
type Instance struct {
	Name      string        `json:"name"`
	Retention time.Duration `json:"retention"` // how long each region's stream keeps ops
	Created   time.Time     `json:"created"`
}

// Region is one region of the instance.
type Region struct {
	ID string `json:"id"`
	// NATS is the URL (or comma-separated URLs of a cluster) of the
	// region's NATS, where its stream lives and its children answer control
	// requests.
	NATS string `json:"nats"`
	// Redis is the address of the region's Redis master; Replica of its
	// replica, if any. The failover swaps them.
	Redis   string    `json:"redis"`
	Replica string    `json:"replica,omitempty"`
	Evicted bool      `json:"evicted,omitempty"` // stayed away too long; back only through rebuild
	Added   time.Time `json:"added"`
	// Rebuild is the region's last rebuild request (rebuild.go): while it
	// is active, the region's children refill it from a peer.
	Rebuild *Rebuild `json:"rebuild,omitempty"`
	// FailedOver is when the last failover swapped Redis and Replica
	// (failover.go); zero if none.
	FailedOver time.Time `json:"failed_over,omitzero"`
}

// Channel is the directed channel Origin → Dest and its controls.
type Channel struct {
	Origin      string  `json:"origin"`
	Dest        string  `json:"dest"`
	Paused      bool    `json:"paused,omitempty"`
	OpsPerSec   float64 `json:"ops_per_sec,omitempty"`
	BytesPerSec float64 `json:"bytes_per_sec,omitempty"`
}

// Floor is the pointwise minimum of the applied vectors of every region
// that is not evicted: tombstones below it can be collected.
type Floor struct {
	Applied map[string]uint64 `json:"applied"`
	At      time.Time         `json:"at"`
}
