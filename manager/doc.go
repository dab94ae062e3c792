// Package manager is the control plane of a global instance: its desired
// state (the instance, its regions, the channels between them and their
// controls) in a NATS KV bucket, the heartbeats children publish, and the
// operations of the channel-manager CLI and its control loop: lifecycle of
// regions and channels, failover of a region's Redis to its replica,
// rebuild of a region from a peer, verification of convergence and the
// collection of tombstones.
//
// Children watch the desired state and reconcile their channels without
// restarting (internal/daemon); the manager never sits on the data path.
package manager
