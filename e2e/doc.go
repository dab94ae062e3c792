// Package e2e holds the multi-region end-to-end tests: real Redis, NATS,
// child and channel-manager containers built locally without any image
// registry (package e2e/images), started, partitioned, killed and restarted
// by package e2e/harness. TestScenarios runs the scenarios of issue 6 on one
// three-region topology, each ending with `channel-manager verify` and the
// invariant checks. The package has no code of its own besides the tests;
// see README.md for how to run them.
package e2e
