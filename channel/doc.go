// Package channel ships ops between regions over NATS JetStream.
//
// Every region has one stream (file storage, retention by age, default 7
// days) that holds its own ops under the subject gr.<instance>.<region>.ops.
// The [Shipper] moves the region's op log from Redis into that stream: each
// op is published with its OpID as the message id and with an
// expected-last-sequence guard, so the stream sequence of an op always
// equals its sequence number, a re-publish after a crash is refused instead
// of stored twice, and two shippers can never interleave. The op log is
// trimmed only after JetStream acknowledged.
//
// A [Receiver] runs in the destination region for each origin: a durable
// pull consumer on the origin's stream, started at the destination's applied
// sequence + 1 (package resume), fetching batches that the engine applies
// atomically together with the applied-vector update, acknowledged only
// after that. Ops received are never logged, so they are never re-shipped.
// Receivers can be paused, resumed and throttled (ops/s and bytes/s) while
// running, and report their status and Prometheus metrics.
package channel
