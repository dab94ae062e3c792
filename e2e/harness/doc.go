// Package harness gives e2e tests real Redis, NATS and child containers on
// their own Docker networks, built locally by package images, plus the
// controls fault tests need: cut and heal a container's link to a network,
// stop, kill, start and restart containers.
//
// Use it from a test package like this:
//
//	func TestMain(m *testing.M) { os.Exit(harness.Main(m)) }
//
//	func TestSomething(t *testing.T) {
//		env := harness.New(t)
//		net := env.Network("sgp")
//		rdb := env.Redis("redis-sgp", harness.RedisOptions{}, net)
//		client := redis.NewClient(&redis.Options{Addr: rdb.Addr()})
//		...
//	}
//
// Main disables testcontainers' Ryuk reaper (TESTCONTAINERS_RYUK_DISABLED,
// which needs an image from a registry) before any testcontainers call and
// sweeps leftovers of earlier runs whose test process is gone. Every
// container and network is labelled [LabelSuite]=1 and removed by
// t.Cleanup, also when the test fails; a failing test logs the tail of each
// container's output first.
//
// Addresses returned to the test (Container.Addr) are host ports published
// on 127.0.0.1 only. Inside a network, containers reach each other by name:
// the name given to Redis, NATS, Child or Run is the container's alias on
// every network it joins.
//
// Helpers call t.Fatal on error, so call them from the test goroutine. A
// subtest that uses its parent's Env calls defer env.Scope(t)() first, so
// that failures are reported to the subtest.
//
// Beyond the servers: NetworkWith(name, NetworkOptions{FixedAddresses:
// true}) gives a network its own subnet, on which a reconnected container
// gets its address back (a healed WAN cut, not a moved machine); Manager
// starts a long-running channel-manager (`run`), ManagerCLI and RunOnce run
// a command container to completion and return its exit code and output;
// ForRunning waits for a program that neither listens nor prints.
package harness
