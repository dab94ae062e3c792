package child

// Refused commands: listed in the command table (and `child --commands`)
// with the reason, and answered
//
//	ERR <COMMAND> is not supported in active-active mode: <reason>
//
// docs/semantics.md lists the same commands with the same reasons.

// Reasons shared by several commands.
const (
	reasonFlush      = "removing keys that other regions wrote concurrently cannot converge; delete keys with DEL or UNLINK"
	reasonOneDB      = "a global instance has one database (0)"
	reasonRename     = "moving a value between keys cannot converge with concurrent writes to either key in other regions; write the new key and DEL the old one"
	reasonScripts    = "user scripts would see the engine's storage format and their writes would bypass replication; send the commands one by one"
	reasonBlocking   = "blocking pops need one server to hand each element to one client; regions cannot agree on that without coordination"
	reasonMulti      = "transactions are not supported yet; send the commands without MULTI (each write is atomic and replicated on its own)"
	reasonWatch      = "optimistic locking cannot see concurrent writes in other regions"
	reasonList       = "lists are not supported in active-active mode yet; use sorted sets for ordered data"
	reasonStream     = "streams are not supported in active-active mode yet"
	reasonSort       = "SORT reads keys named by patterns and can store into another key; sort on the client"
	reasonStore      = "storing a result computed from other keys cannot converge with concurrent writes to those keys in other regions; read the keys and write the result"
	reasonPop        = "a pop can hand the same member to clients in two regions; read the member, then remove it"
	reasonPubSub     = "pub/sub is not replicated by active-active: messages are not replicated between regions"
	reasonBits       = "bit operations are not supported yet"
	reasonHLL        = "HyperLogLog is not supported yet"
	reasonGeo        = "geospatial indexes are not supported yet"
	reasonDiag       = "diagnostics are kept by the backing Redis server; run it there"
	reasonPersist    = "persistence is configured on the backing Redis server"
	reasonReplicaOf  = "replication between regions is managed by the channel manager, and Redis replicas are configured on the backing Redis server"
	reasonCluster    = "a child is not a Redis Cluster node"
	reasonSyncSource = "a child is not a Redis replication source; replicate from the backing Redis server"
	reasonSerialized = "the serialized format would expose the engine's storage format, not the user's value"
)

func init() {
	refuse := func(group, reason string, names ...string) {
		for _, n := range names {
			register(Command{Name: n, Group: group, Refused: reason})
		}
	}

	// Keyspace-wide and cross-key writes.
	refuse(GroupServer, reasonFlush, "flushall", "flushdb")
	refuse(GroupServer, reasonOneDB, "swapdb")
	refuse(GroupGeneric, reasonOneDB, "move")
	refuse(GroupGeneric, reasonRename, "rename", "renamenx")
	register(Command{Name: "copy", Group: GroupGeneric,
		Refused: "copying a value between keys cannot converge with concurrent writes to the source in other regions; read the source and write the destination"})

	// User scripts and functions.
	refuse(GroupScripting, reasonScripts, "eval", "evalsha", "eval_ro", "evalsha_ro", "fcall", "fcall_ro", "function", "script")

	// Transactions.
	refuse(GroupTransactions, reasonMulti, "multi", "exec", "discard")
	refuse(GroupTransactions, reasonWatch, "watch", "unwatch")

	// Lists, with their blocking pops.
	refuse(GroupList, reasonList, "lpush", "rpush", "lpushx", "rpushx", "lpop", "rpop", "lrange", "llen", "lindex",
		"lset", "lrem", "ltrim", "linsert", "lpos", "lmove", "rpoplpush", "lmpop")
	refuse(GroupList, reasonBlocking, "blpop", "brpop", "blmove", "brpoplpush", "blmpop")
	refuse(GroupSortedSet, reasonBlocking, "bzpopmin", "bzpopmax", "bzmpop")

	// Streams.
	refuse(GroupStream, reasonStream, "xadd", "xrange", "xrevrange", "xlen", "xread", "xdel", "xtrim", "xgroup",
		"xreadgroup", "xack", "xclaim", "xautoclaim", "xpending", "xinfo", "xsetid")

	// Commands across keys and pops on sets and sorted sets.
	refuse(GroupGeneric, reasonSort, "sort", "sort_ro")
	refuse(GroupSet, reasonStore, "sunionstore", "sinterstore", "sdiffstore")
	refuse(GroupSortedSet, reasonStore, "zunionstore", "zinterstore", "zdiffstore", "zrangestore")
	register(Command{Name: "smove", Group: GroupSet,
		Refused: "moving a member between sets cannot converge with a concurrent move of it in another region; use SREM and SADD"})
	refuse(GroupSet, reasonPop, "spop")
	refuse(GroupSortedSet, reasonPop, "zpopmin", "zpopmax", "zmpop")
	register(Command{Name: "getex", Group: GroupString, Refused: "GETEX is not supported yet; use GET with EXPIRE or PERSIST"})

	// Types not supported yet.
	refuse(GroupBitmap, reasonBits, "setbit", "bitop", "bitfield")
	refuse(GroupHyperLogLog, reasonHLL, "pfadd", "pfmerge", "pfcount")
	refuse(GroupGeo, reasonGeo, "geoadd")

	// Pub/sub.
	refuse(GroupPubSub, reasonPubSub, "publish", "subscribe", "unsubscribe", "psubscribe", "punsubscribe", "pubsub",
		"spublish", "ssubscribe", "sunsubscribe")

	// Server administration.
	register(
		Command{Name: "object", Group: GroupGeneric, Refused: "OBJECT would describe the engine's storage, not the user's value"},
		Command{Name: "debug", Group: GroupServer, Refused: "DEBUG would act on the engine's storage directly; debug the backing Redis server"},
		Command{Name: "config", Group: GroupServer, Refused: "the child is configured by its flags, environment and config file; Redis settings belong to the backing Redis server"},
		Command{Name: "shutdown", Group: GroupServer, Refused: "stop the child with SIGTERM; the backing Redis server is administered directly"},
		Command{Name: "monitor", Group: GroupServer, Refused: "MONITOR is not supported yet; run it on the backing Redis server"},
		Command{Name: "lastsave", Group: GroupServer, Refused: reasonPersist},
		Command{Name: "migrate", Group: GroupGeneric, Refused: "it would move keys to another server outside replication"},
		Command{Name: "wait", Group: GroupGeneric, Refused: "WAIT counts Redis replicas, not regions; replication between regions is asynchronous"},
		Command{Name: "failover", Group: GroupServer, Refused: "failover of a region's Redis is done by the channel manager"},
		Command{Name: "acl", Group: GroupServer, Refused: "the child has one user, default, with the password of its configuration"},
		Command{Name: "memory", Group: GroupServer, Refused: "memory is reported by the backing Redis server"},
		Command{Name: "module", Group: GroupServer, Refused: "modules cannot be loaded into the child"},
	)
	refuse(GroupServer, reasonReplicaOf, "replicaof", "slaveof")
	refuse(GroupServer, reasonSyncSource, "sync", "psync")
	refuse(GroupServer, reasonPersist, "save", "bgsave", "bgrewriteaof")
	refuse(GroupGeneric, reasonSerialized, "dump", "restore")
	refuse(GroupCluster, reasonCluster, "cluster", "readonly", "readwrite")
	refuse(GroupServer, reasonDiag, "latency", "slowlog")
}
