// Package resume decides where a sync channel restarts and whether it can.
//
// The destination region's applied vector, kept in its own Redis and raised
// in the same atomic step as every applied batch, is the authority on where
// a channel resumes: not the JetStream consumer, which may have been lost,
// recreated or moved. Because the shipper publishes every op with the
// stream sequence equal to the op's sequence number (it publishes with an
// expected-last-sequence guard), "applied seq + 1" is also the stream
// sequence to start from.
//
// JetStream silently drops messages that age out of a stream while a
// consumer is away. Plan and CheckNext detect that from sequence numbers
// and report ErrGap; the channel then stops in state needs-rebuild. It never
// skips.
package resume
