// Package child is a region's writable instance: the RESP endpoint that
// applications reach with any Redis client, the command table it is built
// on, and the Redis engine that turns every write into a stamped,
// replicable CRDT op.
//
// The engine (engine.go, lua/) keeps the user keyspace in the region's
// Redis database 0 exactly as clients see it and everything else in
// database 1 (docs/storage.md). A local write is one atomic call of the
// engine's function library: it advances the HLC, takes the next sequence
// number, merges the op into the key's state and appends it to the op log.
// A batch of remote ops is one atomic call that merges them and raises the
// applied vector. The Lua mirrors package crdt; differential tests hold the
// two together.
//
// The endpoint (server.go, table.go, cmd_*.go) answers reads from database
// 0 directly and sends writes to the engine. One command table gives
// dispatch, COMMAND, the help text and the refusal of commands that cannot
// converge.
package child
