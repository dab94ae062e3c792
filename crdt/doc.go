// Package crdt is the pure model of Global Replica: the hybrid logical
// clock, OpIDs, the op types for every supported write, the merge rules that
// make concurrent writes converge, and the compact wire format of ops.
//
// The package does no IO, starts no goroutines and never reads a clock: the
// caller passes the time in. It is the reference that the Redis engine's Lua
// scripts (package child) are tested against, and docs/semantics.md describes
// its rules with worked examples.
//
// # State
//
// Every key is a [Key]: up to one substate per Redis type plus an expiry
// register. All types are built from one CRDT, the [Elem]:
//
//   - a set of register entries, each stamped with the [Dot] (origin region and
//     sequence number) of the op that wrote it and its HLC [Timestamp]; the
//     visible entry is the one with the greatest timestamp (last writer wins);
//   - per-region counter runs ([Run]): cumulative sums of a region's increments,
//     merged by taking the run with the higher sequence number;
//   - a removal context: per region, the highest sequence number observed by a
//     remove (and the counter run it observed). Entries and increments covered
//     by it are gone; anything it did not observe survives (observed-remove).
//
// A string is one Elem, a hash one Elem per field, a set one Elem per member
// (entries carry no value) and a sorted set one Elem per member (entries carry
// the score, increments add on top).
//
// Every op is a delta of that state and every merge is a join (set union,
// maximum by sequence number), so applying an op twice or applying
// concurrent ops in any order gives the same state.
//
// # Ops
//
// Ops are produced at the origin by the generator methods of [Key] (Set,
// IncrBy, HSet, SAdd, ZAdd, Del, Expire, ...), which read the observed state and
// stamp the op, and applied anywhere with [Key.Apply]. [Op.MarshalBinary] and
// [UnmarshalOp] give the versioned wire format (a MessagePack array whose first
// element is the format version), shared byte for byte with the Lua scripts.
package crdt
